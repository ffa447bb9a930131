"""Tests of knet_d2.model_zoo."""
