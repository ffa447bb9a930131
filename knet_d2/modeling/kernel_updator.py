"""K-Net adaptive kernel update (official ``KernelUpdator``; docs/reference.md §1.4 step 3).

With F^K the group feature of a kernel and K its previous value (all Linear layers with bias)::

    [phi_in, phi_out] = dynamic_layer(F^K)            Linear(Cin, 2 Cf), split Cf / Cf
    [kap_in, kap_out] = input_layer(K)                Linear(Cin, 2 Cf)
    F^G = kap_in * phi_in
    g_K = sigmoid(input_norm_in(input_gate(F^G)))     Linear(Cf, Cf) + LN
    g_F = sigmoid(norm_in(update_gate(F^G)))          Linear(Cf, Cf) + LN
    K~  = g_F * norm_out(phi_out) + g_K * input_norm_out(kap_out)
    K'  = relu(fc_norm(fc_layer(K~)))                 Linear(Cf, Cout) + LN

Split-halves quirk (docs/reference.md §1.5): when the incoming channel dim C is ``k * in_channels``
with k > 1 (semantic FCN/PSP/ASPP: C = 512, in_channels = 256), every C-vector is cut into k
contiguous ``in_channels`` chunks, each chunk of F^K is paired with the same chunk of K and
processed as an independent item with shared weights; the k outputs are concatenated back.

State-dict keys are identical to the official ``kernel_update_conv.*``: ``dynamic_layer``,
``input_layer``, ``input_gate``, ``update_gate``, ``fc_layer`` (``.weight``, ``.bias``) and
``norm_in``, ``norm_out``, ``input_norm_in``, ``input_norm_out``, ``fc_norm``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KernelUpdator"]


class KernelUpdator(nn.Module):
    """Gated update of kernels by their group features."""

    def __init__(
        self,
        in_channels: int = 256,
        feat_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
    ):
        """
        Args:
            in_channels: Cin, channels of one item of F^K and K (256).
            feat_channels: Cf, width of the gates and dynamic parameters (default Cin; 256 in
                every official config).
            out_channels: Cout (default Cin). Must equal Cin when the split-halves path is used
                (C > Cin), so that the chunks can be concatenated back to C.
        """
        super().__init__()
        feat_channels = in_channels if feat_channels is None else feat_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.out_channels = out_channels

        self.dynamic_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_gate = nn.Linear(feat_channels, feat_channels)
        self.update_gate = nn.Linear(feat_channels, feat_channels)
        self.norm_in = nn.LayerNorm(feat_channels)
        self.norm_out = nn.LayerNorm(feat_channels)
        self.input_norm_in = nn.LayerNorm(feat_channels)
        self.input_norm_out = nn.LayerNorm(feat_channels)
        self.fc_layer = nn.Linear(feat_channels, out_channels)
        self.fc_norm = nn.LayerNorm(out_channels)

    def forward(self, update_feature: torch.Tensor, input_feature: torch.Tensor) -> torch.Tensor:
        """
        Args:
            update_feature: F^K, (B, N, C) group features of the kernels.
            input_feature: K, (B, N, C) previous kernels.
            C must be a multiple k of ``in_channels`` (k > 1 = split-halves quirk).

        Returns:
            (B, N, k * out_channels) updated kernels K' (= (B, N, C) when Cout = Cin).
        """
        assert update_feature.shape == input_feature.shape, (
            update_feature.shape,
            input_feature.shape,
        )
        b, n, c = update_feature.shape
        assert c % self.in_channels == 0, f"channels {c} not a multiple of {self.in_channels}"
        k = c // self.in_channels
        assert k == 1 or self.out_channels == self.in_channels
        cf = self.feat_channels
        # (B, N, k * Cin) -> (B * N * k, Cin): chunk j of kernel n is item n * k + j
        upd = update_feature.reshape(-1, self.in_channels)
        inp = input_feature.reshape(-1, self.in_channels)

        params = self.dynamic_layer(upd)
        param_in, param_out = params[:, :cf], params[:, cf:]
        inputs = self.input_layer(inp)
        input_in, input_out = inputs[:, :cf], inputs[:, cf:]

        gate_feats = input_in * param_in
        input_gate = self.input_norm_in(self.input_gate(gate_feats)).sigmoid()
        update_gate = self.norm_in(self.update_gate(gate_feats)).sigmoid()
        param_out = self.norm_out(param_out)
        input_out = self.input_norm_out(input_out)

        features = update_gate * param_out + input_gate * input_out
        features = F.relu(self.fc_norm(self.fc_layer(features)))
        return features.reshape(b, n, k * self.out_channels)
