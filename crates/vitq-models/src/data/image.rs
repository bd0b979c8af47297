//! JPEG / PNG decoding and timm's eval preprocessing (being written; see issue #3).
