"""Tests of demo/ (the demo script, its predictor and image reading)."""
