"""Which memory layout a tensor has, as the channels-last tests need to tell."""
import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """NHWC strides (and not merely a tensor whose C or H*W is 1, which is both)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
