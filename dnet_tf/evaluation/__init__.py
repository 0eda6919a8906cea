"""Evaluation: Pascal VOC AP, the paper's Table 1 and Figures 3-4, the sliding-window baseline (section 7)."""
