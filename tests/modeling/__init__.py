"""Tests of knet_d2.modeling (and the semantic K-Net in knet_d2.modeling.semantic)."""
