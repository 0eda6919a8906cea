"""Pure, stateless TensorFlow ops. Graph-safe: no py_function, no Python loops over tensor values.

Box frames (all continuous yxyx = [ymin, xmin, ymax, xmax], pixel (r, c) covers
[r, r+1) x [c, c+1)):
  image_yxyx   absolute pixels of the original image
  window_yxyx  absolute pixels of a window/crop, origin at the window's top-left
  cell_yxyx    cells of a mask grid or canvas (one unit = one mask cell)
  norm_yxyx    normalized to [0, 1] of some frame (named in the docstring)
"""
