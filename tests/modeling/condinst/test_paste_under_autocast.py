"""CondInst pastes masks on a float32 grid, under autocast and from half-precision
probabilities alike: the masks equal the float32 paste of the same values."""

import torch

from centermask.modeling.condinst.postprocess import paste_global_masks


def test_half_precision_probabilities_paste_like_float32_under_autocast(device):
    generator = torch.Generator().manual_seed(0)
    # Smooth blobs on a 150 x 200 stride-4 map of a 600 x 800 padded input.
    ys, xs = torch.meshgrid(torch.arange(150.0), torch.arange(200.0), indexing="ij")
    centres = torch.rand(3, 2, generator=generator) * torch.tensor([150.0, 200.0])
    blobs = torch.exp(-((ys - centres[:, :1, None]) ** 2 + (xs - centres[:, 1:, None]) ** 2) / 400)
    probs = blobs[:, None].to(device=device, dtype=torch.bfloat16)
    expected = paste_global_masks(probs.float(), (590, 790), (1180, 1580), (600, 800))
    with torch.autocast(device, dtype=torch.bfloat16):
        masks = paste_global_masks(probs, (590, 790), (1180, 1580), (600, 800))
    assert expected.sum() > 10000
    assert torch.equal(masks, expected)
