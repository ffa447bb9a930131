"""Tests of knet_d2.engine (trainer, checkpointer, launch, resume, start-up checks)."""
