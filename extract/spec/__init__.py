"""What the extractor runs, as plain data: model specs with their preprocessing, and transforms.

Stdlib only, like timm's pretrained configs: listing, resolving and fingerprinting need no torch.
"""
__all__ = ["models", "transforms"]
