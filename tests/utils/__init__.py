"""Tests of knet_d2.utils."""
