"""Tests of knet_d2, laid out like the package (tests/<subpackage>/test_<module>.py)."""
