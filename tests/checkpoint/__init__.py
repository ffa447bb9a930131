"""Tests of knet_d2.checkpoint (checkpoint layouts, conversion and I/O)."""
