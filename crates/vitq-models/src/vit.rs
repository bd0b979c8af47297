//! Vision Transformers: ViT, DeiT and DINOv2 (being written; see issue #3).
