"""Serving the exported detector: a gRPC/REST client for TF Serving's API and a local server that
speaks that API over the same SavedModel (for development, tests and machines without TF Serving).

Modules: ``client`` (DetectorClient, RestDetectorClient, RetryPolicy), ``detections`` (Detection,
Detections, drawing), ``server`` (LocalModelServer, ServerOptions) with its parts
``manager`` (versions), ``batching``, ``core``, ``grpc_service``, ``rest``, ``metrics``,
``config_files`` (TF Serving's config protos); ``toy_model`` (a small contract-conforming
SavedModel); command lines ``client_cli`` and ``server_cli``.

Imports are left to the submodules so that ``import dnet_tf.serving.client`` does not start a server
stack, and the reverse.
"""
