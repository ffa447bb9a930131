"""Tests of knet_d2.export and knet_onnx."""
