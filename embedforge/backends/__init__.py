"""Serving backends of a release: ONNX and OpenVINO files in sentence-transformers' layout, and a loader for them.

Written with the libraries that optimum wraps (torch.onnx, onnxruntime's optimizer and quantizer, OpenVINO's
converter and NNCF), because optimum's ONNX and OpenVINO packages do not install beside transformers 5.
"""
