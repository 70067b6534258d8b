//! The protobuf codec every generated client and server uses.
//!
//! tonic's default codec starts each message's encode and decode buffer at 8 KiB. holdfast's
//! messages are small (a Reserve request is well under 200 bytes), so every call paid for
//! a buffer forty times its size. [`SmallBufferCodec`] is prost's codec with 1 KiB buffers:
//! a larger message still encodes and decodes, the buffer grows as it would from 8 KiB.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial capacity of the encode and decode buffers, per message.
pub const BUFFER_SIZE: usize = 1024;

/// tonic's default: past this many buffered bytes a streaming encoder yields to the runtime.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The buffer settings [`SmallBufferCodec`] hands to tonic.
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// `application/grpc+proto` through prost, with [`BUFFER_SIZE`] buffers. The generated code
/// names it through `codec_path` in `build.rs`.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U> {
    _types: PhantomData<fn(T) -> U>,
}

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::{Decoder, Encoder};

    #[test]
    fn the_encoder_and_decoder_ask_for_one_kibibyte_buffers() {
        let mut codec = SmallBufferCodec::<crate::common::v1::Money, crate::common::v1::Money>::default();
        let settings = format!("{:?}", codec.encoder().buffer_settings());
        assert!(settings.contains("buffer_size: 1024"), "{settings}");
        let settings = format!("{:?}", codec.decoder().buffer_settings());
        assert!(settings.contains("buffer_size: 1024"), "{settings}");
    }

    #[test]
    fn generated_clients_and_servers_use_the_small_buffer_codec() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/holdfast.inventory.v1.rs"));
        assert!(generated.contains("crate::codec::SmallBufferCodec::default()"));
        assert!(!generated.contains("tonic_prost::ProstCodec"));
    }
}
