//! The chunked layout of base backups: a tar stream cut into independently compressed parts.
//!
//! `pg_basebackup` writes one tar stream. Compressed as one zstd frame it can only be unpacked
//! by one decompressor feeding one writer, which bounds a restore to one core. Here the stream
//! is cut into chunks of about [`CHUNK_TARGET`] tar bytes, each compressed on its own (in
//! parallel) and preceded by a zstd *skippable frame* that says how long the chunk is and, when
//! it starts inside a file, which file and where. A restore hands chunks to as many workers as
//! there are cores, each writing its files at their offsets; and since decompressors skip
//! skippable frames, `zstd -d | tar -x` still reads the stored stream as the original tar.
//!
//! Cuts fall on 512-byte tar blocks, either before a header or inside a regular file's data,
//! so a chunk never splits a header. Only what `pg_basebackup` writes is accepted: regular
//! files, directories and symbolic links with ustar names (no GNU or pax extensions); paths
//! that would leave the target folder are refused.
//!
//! [`format`] holds the layout (tar headers, the skippable frames); [`cut`] finds where a tar
//! stream may be cut; [`compress`] compresses the chunks in parallel; [`unpack`] reads them
//! back in parallel, each worker writing its files through [`extract`]; [`incremental`] applies
//! an incremental base backup's tar onto its parent's restored folder, and catches a backup's
//! `backup_manifest` as its tar streams past.

mod compress;
mod cut;
mod extract;
mod format;
pub mod incremental;
mod unpack;

pub use compress::TarChunks;
pub use unpack::unpack;
#[cfg(test)]
use {compress::compress, cut::Cutter, format::ChunkMeta};

#[cfg(test)]
mod tests;
