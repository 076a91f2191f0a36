"""Pictures: mask overlays through torchvision's draw_segmentation_masks, checked by hand."""

from __future__ import annotations

import torch

from segen.viz import overlay


def test_overlay_blends_each_class_colour_and_leaves_ignored_pixels_alone():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    masks = torch.randint(0, 3, (2, 4, 5))
    masks[0, 0, 0] = masks[1, 3, 4] = 255  # ignored
    palette = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    out = overlay(images, masks, palette, alpha=0.5)
    expected = images.float().clone()
    for n, y, x in torch.nonzero(masks != 255).tolist():
        expected[n, :, y, x] = images[n, :, y, x].float() * 0.5 + palette[masks[n, y, x]].float() * 0.5
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out.float() - expected).abs().max() <= 0.5  # torchvision truncates the blend to uint8
    assert torch.equal(out[0, :, 0, 0], images[0, :, 0, 0]) and torch.equal(out[1, :, 3, 4], images[1, :, 3, 4])
    grey = overlay(images[:, :1], masks, palette)  # grey photos are shown as RGB
    assert grey.shape == (2, 3, 4, 5) and torch.equal(grey[0, :, 0, 0], images[0, :1, 0, 0].repeat(3))
