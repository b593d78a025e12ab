//! The bounds-checked lib0 v1 reader every other part of [`crate::wire`] reads with, and
//! [`Invalid`], the one answer for bytes it refuses.

use std::fmt;
use yrs::encoding::read::{Cursor, Error as ReadError, Read};

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The payload ended before a complete value could be read.
    Truncated,
    /// The payload breaks the lib0 v1 layout; the text names what was wrong.
    Malformed(&'static str),
    /// A client id above [`MAX_CLIENT_ID`].
    ClientIdTooLarge(u64),
    /// `Any` arrays/maps nested deeper than [`MAX_ANY_DEPTH`].
    TooDeep,
    /// A clock that would overflow `u32`.
    ClockOverflow,
    /// A struct reaching clock [`MAX_STRUCT_CLOCK`] or beyond.
    ClockTooLarge,
    /// Content that Tandem does not accept; the text names it.
    Unsupported(&'static str),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Truncated => f.write_str("payload is truncated"),
            Invalid::Malformed(what) => write!(f, "malformed payload: {what}"),
            Invalid::ClientIdTooLarge(id) => {
                write!(f, "client id {id} exceeds the 53-bit limit")
            }
            Invalid::TooDeep => write!(f, "values nested deeper than {MAX_ANY_DEPTH} levels"),
            Invalid::ClockOverflow => f.write_str("clock overflows 32 bits"),
            Invalid::ClockTooLarge => write!(f, "a struct's clock reaches {MAX_STRUCT_CLOCK}"),
            Invalid::Unsupported(what) => write!(f, "unsupported content: {what}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Largest client id yrs can represent (2^53 - 1, JavaScript's largest safe integer).
pub(crate) const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Structs end below this clock (2^31 - 1). yrs takes the difference between a struct's clock
/// and its client's state as `i32` when it integrates: a struct at 2^31 or beyond reads as
/// already known, lands beside a gap it did not fill, and yrs panics on the next struct of that
/// client (or at once). No client makes two billion changes in one session.
pub(crate) const MAX_STRUCT_CLOCK: u32 = i32::MAX as u32;

/// Deepest nesting of `Any` arrays/maps accepted; a top-level array or map counts as one.
pub(crate) const MAX_ANY_DEPTH: usize = 64;

/// Maps yrs's primitive read errors onto ours.
fn read_error(e: ReadError) -> Invalid {
    match e {
        ReadError::EndOfBuffer(_) => Invalid::Truncated,
        ReadError::InvalidVarInt => Invalid::Malformed("var-int longer than yrs allows"),
        _ => Invalid::Malformed("unreadable value"),
    }
}

/// A bounds-checked reader. Var-ints go through yrs's own readers so that values (including
/// yrs's wrap-around of over-long `u32` var-ints) come out exactly as yrs will see them; byte
/// runs are sliced here with checked arithmetic instead of `Cursor::read_exact`, whose
/// `next + len` is unchecked.
pub(super) struct Reader<'a> {
    cur: Cursor<'a>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader {
            cur: Cursor::new(buf),
        }
    }

    /// Offset of the next byte to read.
    pub(super) fn position(&self) -> usize {
        self.cur.next
    }

    /// Moves back (or on) to `offset`, a position read earlier.
    pub(super) fn seek(&mut self, offset: usize) {
        self.cur.next = offset;
    }

    pub(super) fn u8(&mut self) -> Result<u8, Invalid> {
        self.cur.read_u8().map_err(read_error)
    }

    pub(super) fn var_u32(&mut self) -> Result<u32, Invalid> {
        self.cur.read_var::<u32>().map_err(read_error)
    }

    pub(super) fn var_u64(&mut self) -> Result<u64, Invalid> {
        self.cur.read_var::<u64>().map_err(read_error)
    }

    pub(super) fn bytes(&mut self, len: usize) -> Result<&'a [u8], Invalid> {
        let buf: &'a [u8] = self.cur.buf;
        let start = self.cur.next;
        let end = start.checked_add(len).ok_or(Invalid::Truncated)?;
        let out = buf.get(start..end).ok_or(Invalid::Truncated)?;
        self.cur.next = end;
        Ok(out)
    }

    /// lib0 `varUint8Array`: a `u32` var-int length, then that many bytes.
    pub(super) fn buf(&mut self) -> Result<&'a [u8], Invalid> {
        let len = self.var_u32()?;
        let len = usize::try_from(len).map_err(|_| Invalid::Truncated)?;
        self.bytes(len)
    }

    /// lib0 `varString`; yrs refuses invalid UTF-8, so do we.
    pub(super) fn string(&mut self) -> Result<&'a str, Invalid> {
        std::str::from_utf8(self.buf()?).map_err(|_| Invalid::Malformed("invalid UTF-8"))
    }

    /// A client id, read as yrs reads it (a `u64` var-int) and held to the 53-bit bound.
    pub(super) fn client(&mut self) -> Result<u64, Invalid> {
        let client = self.var_u64()?;
        if client > MAX_CLIENT_ID {
            return Err(Invalid::ClientIdTooLarge(client));
        }
        Ok(client)
    }

    /// An `ID`: client, then a `u32` clock.
    pub(super) fn id(&mut self) -> Result<(u64, u32), Invalid> {
        Ok((self.client()?, self.var_u32()?))
    }

    /// lib0 signed var-int, consumed the way yrs's `read_var::<i64>` consumes it. yrs shifts
    /// each 7-bit group into place before checking its length cap, so an 11th byte is shifted
    /// by 69 bits, and it negates the result, which overflows for `i64::MIN`: both panic in a
    /// debug build, so both are refused here. Bits pushed past bit 63 by a shift of 62 are
    /// dropped silently by yrs (`<<` does not check them), and so they are here.
    pub(super) fn var_i64(&mut self) -> Result<(), Invalid> {
        let first = self.u8()?;
        let negative = first & 0x40 != 0;
        let mut num = i64::from(first & 0x3F);
        let mut shift = 6u32;
        let mut byte = first;
        while byte & 0x80 != 0 {
            if shift >= i64::BITS {
                return Err(Invalid::Malformed("signed var-int too long"));
            }
            byte = self.u8()?;
            num |= i64::from(byte & 0x7F) << shift;
            shift += 7;
        }
        if negative && num == i64::MIN {
            return Err(Invalid::Malformed("signed var-int out of range"));
        }
        Ok(())
    }
}
