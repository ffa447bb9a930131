"""K-Net model parts; importing this module registers them with Detectron2's registries."""
