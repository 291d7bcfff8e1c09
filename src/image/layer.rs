//! One layer's byte path: network chunks → (tee into the content store,
//! counting) → decompress → hash the tar (diffID) → unpack. Runs on a
//! blocking thread fed by a bounded channel, so memory stays flat whatever
//! the layer size.

use std::io::{self, BufReader, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::content::Ingest;
use super::digest::{Digest, HashingReader};
use super::unpack::{LayerApplier, UnpackError};

pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_OCI_LAYER_ND_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MEDIA_OCI_LAYER_ND_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type; `None` for types that are not layers.
    pub fn of_media_type(m: &str) -> Option<Compression> {
        match m {
            MEDIA_OCI_LAYER | MEDIA_OCI_LAYER_ND => Some(Compression::None),
            MEDIA_OCI_LAYER_GZIP
            | MEDIA_OCI_LAYER_ND_GZIP
            | MEDIA_DOCKER_LAYER
            | MEDIA_DOCKER_FOREIGN => Some(Compression::Gzip),
            MEDIA_OCI_LAYER_ZSTD | MEDIA_OCI_LAYER_ND_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Reads chunks sent by the async side. An `Err` chunk is a network error.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Copies everything read into the content store's ingest.
pub struct Tee<R> {
    inner: R,
    ingest: Option<Ingest>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = self.ingest.as_mut() {
            w.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<flate2::read::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    fn new(inner: R, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Decoder::Plain(inner),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(inner))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::new(inner)?),
        })
    }

    fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => (*d).into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("decompress layer")]
    Decompress(#[source] io::Error),
    #[error(
        "layer content changed: uncompressed digest is {actual}, the image config says {expected}"
    )]
    DiffId { expected: Digest, actual: Digest },
    #[error(transparent)]
    Content(#[from] super::content::ContentError),
}

/// What [`apply`] leaves for the caller: the applier (to finish once the
/// lower layers are in place) and counts.
pub struct Applied {
    pub applier: LayerApplier,
    pub uncompressed: u64,
}

/// Unpacks one compressed layer from `source`, teeing the compressed bytes
/// into `ingest` (when downloading) and checking the diffID.
pub fn apply<R: Read>(
    source: R,
    compression: Compression,
    ingest: Option<Ingest>,
    mut applier: LayerApplier,
    diff_id: &Digest,
) -> Result<Applied, LayerError> {
    let tee = Tee {
        inner: source,
        ingest,
    };
    let decoder = Decoder::new(tee, compression).map_err(LayerError::Decompress)?;
    let mut hashing = HashingReader::new(decoder);
    applier.apply(&mut hashing)?;
    // The tar ends before its zero padding; the diffID covers all of it.
    let ((actual_digest, decoder), uncompressed) = hashing
        .drain_and_finish_inner()
        .map_err(LayerError::Decompress)?;
    let mut tee = decoder.into_inner();
    // Whatever the decompressor left unread (trailers) still belongs to the blob.
    io::copy(&mut tee, &mut io::sink()).map_err(LayerError::Decompress)?;
    if actual_digest != *diff_id {
        return Err(LayerError::DiffId {
            expected: diff_id.clone(),
            actual: actual_digest,
        });
    }
    if let Some(ingest) = tee.ingest.take() {
        ingest.commit()?;
    }
    Ok(Applied {
        applier,
        uncompressed,
    })
}
