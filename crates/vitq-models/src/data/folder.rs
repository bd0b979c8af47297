//! ImageFolder and ImageNet-style folder datasets (being written; see issue #3).
