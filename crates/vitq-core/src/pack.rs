//! Bit packing of `b`-bit codes (2 ≤ b ≤ 8) into bytes, lossless for any length.
//!
//! # Layout
//! Codes form one little-endian bit stream: code `i` occupies stream bits `[i·b, i·b + b)`, and stream
//! bit `k` is bit `k mod 8` (least significant first) of byte `k / 8`. `n` codes take
//! [`packed_len`]`(n, b) = ceil(n·b / 8)` bytes; unused high bits of the last byte are zero. So at 4 bits
//! code 0 is the low nibble of byte 0 and code 1 its high nibble; at 8 bits the bytes are the codes.
//! Codes are unsigned: signed (symmetric) codes are stored offset by `2^(b-1)` (see
//! [`crate::QuantizedTensor`]).
//!
//! [`pack`] and [`unpack`] move 8 codes (exactly `b` bytes) at a time through a `u64`; [`pack_ref`] and
//! [`unpack_ref`] go bit by bit and are the oracle the tests compare them with.
//!
//! ```
//! use vitq_core::{pack, BitWidth};
//!
//! let bits = BitWidth::new(3)?;
//! let codes = [1u8, 7, 0, 5, 2];
//! let packed = pack::pack(&codes, bits)?;
//! assert_eq!(packed.len(), pack::packed_len(codes.len(), bits));
//! assert_eq!(pack::unpack(&packed, codes.len(), bits)?, codes);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::spec::BitWidth;

/// Bytes needed for `n` codes of `bits` bits.
pub const fn packed_len_bits(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Bytes needed for `n` codes of width `bits`.
pub fn packed_len(n: usize, bits: BitWidth) -> usize {
    packed_len_bits(n, bits.get())
}

// Eight codes of b bits fill exactly b bytes: the unit the fast path moves.
const _: () = {
    let mut b = 2;
    while b <= 8 {
        assert!(packed_len_bits(8, b) == b as usize);
        b += 1;
    }
    // QLoRA's 64-element NF4 block is 32 bytes.
    assert!(packed_len_bits(64, 4) == 32);
};

fn check_codes(codes: &[u8], bits: BitWidth) -> Result<()> {
    let max = (1u32 << bits.get()) - 1;
    match codes.iter().position(|&c| u32::from(c) > max) {
        Some(i) => Err(Error::InvalidSpec(format!(
            "code {} at index {i} does not fit in {bits} bits (max {max})",
            codes[i]
        ))),
        None => Ok(()),
    }
}

fn check_bytes(bytes: &[u8], n: usize, bits: BitWidth) -> Result<()> {
    let need = packed_len(n, bits);
    if bytes.len() != need {
        return Err(Error::ShapeMismatch {
            what: format!("packed bytes for {n} codes of {bits} bits"),
            expected: vec![need],
            got: vec![bytes.len()],
        });
    }
    Ok(())
}

/// Packs codes (each `< 2^bits`) into [`packed_len`] bytes.
pub fn pack(codes: &[u8], bits: BitWidth) -> Result<Vec<u8>> {
    check_codes(codes, bits)?;
    let b = bits.get() as usize;
    let mut out = Vec::with_capacity(packed_len(codes.len(), bits));
    let chunks = codes.chunks_exact(8);
    let tail = chunks.remainder();
    if b == 8 {
        out.extend_from_slice(codes);
        return Ok(out);
    }
    for chunk in chunks {
        let mut acc = 0u64;
        for (j, &c) in chunk.iter().enumerate() {
            acc |= u64::from(c) << (j * b);
        }
        out.extend_from_slice(&acc.to_le_bytes()[..b]);
    }
    let mut acc = 0u64;
    for (j, &c) in tail.iter().enumerate() {
        acc |= u64::from(c) << (j * b);
    }
    out.extend_from_slice(&acc.to_le_bytes()[..(tail.len() * b).div_ceil(8)]);
    Ok(out)
}

/// Unpacks `n` codes from bytes written by [`pack`]; errors if the byte count is not [`packed_len`].
pub fn unpack(bytes: &[u8], n: usize, bits: BitWidth) -> Result<Vec<u8>> {
    check_bytes(bytes, n, bits)?;
    let b = bits.get() as usize;
    if b == 8 {
        return Ok(bytes.to_vec());
    }
    let mask = (1u64 << b) - 1;
    let mut out = Vec::with_capacity(n);
    let full = n / 8;
    for chunk in bytes.chunks_exact(b).take(full) {
        let mut buf = [0u8; 8];
        buf[..b].copy_from_slice(chunk);
        let acc = u64::from_le_bytes(buf);
        out.extend((0..8).map(|j| ((acc >> (j * b)) & mask) as u8));
    }
    let rest = n - full * 8;
    if rest > 0 {
        let mut buf = [0u8; 8];
        let tail = &bytes[full * b..];
        buf[..tail.len()].copy_from_slice(tail);
        let acc = u64::from_le_bytes(buf);
        out.extend((0..rest).map(|j| ((acc >> (j * b)) & mask) as u8));
    }
    Ok(out)
}

/// Reference packer: one bit at a time, straight from the layout definition.
pub fn pack_ref(codes: &[u8], bits: BitWidth) -> Result<Vec<u8>> {
    check_codes(codes, bits)?;
    let b = bits.get() as usize;
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    for (i, &c) in codes.iter().enumerate() {
        for j in 0..b {
            let k = i * b + j;
            out[k / 8] |= ((c >> j) & 1) << (k % 8);
        }
    }
    Ok(out)
}

/// Reference unpacker: one bit at a time.
pub fn unpack_ref(bytes: &[u8], n: usize, bits: BitWidth) -> Result<Vec<u8>> {
    check_bytes(bytes, n, bits)?;
    let b = bits.get() as usize;
    Ok((0..n)
        .map(|i| {
            (0..b).fold(0u8, |c, j| {
                c | (((bytes[(i * b + j) / 8] >> ((i * b + j) % 8)) & 1) << j)
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_layout_is_low_nibble_first() {
        let b = BitWidth::new(4).unwrap();
        assert_eq!(pack(&[0x1, 0xA, 0x3], b).unwrap(), vec![0xA1, 0x03]);
        let b = BitWidth::new(2).unwrap();
        assert_eq!(
            pack(&[1, 2, 3, 0, 1], b).unwrap(),
            vec![0b00_11_10_01, 0b01]
        );
    }

    #[test]
    fn out_of_range_codes_and_wrong_lengths_are_errors() {
        let b = BitWidth::new(3).unwrap();
        assert!(pack(&[8], b).is_err());
        assert!(unpack(&[0, 0], 2, b).is_err());
        assert!(unpack(&[0, 0], 5, b).is_ok());
    }
}
