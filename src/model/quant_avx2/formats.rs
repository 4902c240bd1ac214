//! The weight block formats the AVX2 tiles read (GGML's layouts, 32 values a block): where the
//! f16 scales lie and how the quantized values unpack into 32 bytes.

use std::arch::x86_64::*;

/// One GGML block type of 32 values.
pub(super) trait Format {
    /// Bytes of one block.
    const BYTES: usize;
    /// What the per-block offset sums are multiplied by at the end (value = d * q + offset),
    /// `None` where values are `d * q` alone.
    const OFFSET: Option<f32>;
    /// Whether [`Format::unpack`] gives signed bytes (else unsigned, at most 31).
    const SIGNED: bool;
    /// Lane 0: the scale `d`; lane 1: the offset's factor (`m`, or `d` where the offset is a
    /// multiple of `d`); lanes 2, 3: zero or anything (multiplied by the zeros of `ds`).
    /// Unless a format says otherwise: `d` and `m`, the block's first two f16 values.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales(block: *const u8) -> __m128 {
        f16_pair(block)
    }
    /// The block's 32 quantized values, a byte each.
    unsafe fn unpack(block: *const u8) -> __m256i;
}

/// `d` (f16) and `m` (f16), then 16 bytes of nibbles: value = d * q + m.
pub(super) struct Q4_1;
/// `d` (f16), 32 fifth bits, 16 bytes of nibbles: value = d * (q - 16).
pub(super) struct Q5_0;
/// `d`, `m` (f16), 32 fifth bits, 16 bytes of nibbles: value = d * q + m.
pub(super) struct Q5_1;
/// `d` (f16), 32 signed bytes: value = d * q.
pub(super) struct Q8_0;

impl Format for Q4_1 {
    const BYTES: usize = 20;
    const OFFSET: Option<f32> = Some(1.0);
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(block: *const u8) -> __m256i {
        nibbles(block.add(4))
    }
}

impl Format for Q5_0 {
    const BYTES: usize = 22;
    // d * (q - 16) = d * q - 16 * d: the offset sums d * sum(act); -16 is exact in binary.
    const OFFSET: Option<f32> = Some(-16.0);
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales(block: *const u8) -> __m128 {
        let bits = (block as *const u16).read_unaligned();
        _mm_cvtph_ps(_mm_set1_epi16(bits as i16))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(block: *const u8) -> __m256i {
        five_bits(block.add(2), block.add(6))
    }
}

impl Format for Q5_1 {
    const BYTES: usize = 24;
    const OFFSET: Option<f32> = Some(1.0);
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(block: *const u8) -> __m256i {
        five_bits(block.add(4), block.add(8))
    }
}

impl Format for Q8_0 {
    const BYTES: usize = 34;
    const OFFSET: Option<f32> = None;
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales(block: *const u8) -> __m128 {
        let bits = (block as *const u16).read_unaligned();
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(block: *const u8) -> __m256i {
        _mm256_loadu_si256(block.add(2) as *const __m256i)
    }
}

/// Two adjacent f16 values at `at` as f32 lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_pair(at: *const u8) -> __m128 {
    let bits = (at as *const u32).read_unaligned();
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// 16 bytes of nibbles as 32 bytes: low nibbles are values 0..16, high nibbles 16..32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(at: *const u8) -> __m256i {
    let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(at as *const __m128i));
    let shifted = _mm256_srlv_epi64(packed, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// 5-bit values: 32 fifth bits (little-endian u32) at `high`, 16 bytes of nibbles at `low`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn five_bits(high: *const u8, low: *const u8) -> __m256i {
    let bits = (high as *const u32).read_unaligned();
    _mm256_or_si256(nibbles(low), fifth_bits(bits))
}

/// 0x10 in byte j (of 32) where bit j of `bits` is set.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth_bits(bits: u32) -> __m256i {
    // Byte j gets byte j / 8 of `bits`, then is tested against bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
}
