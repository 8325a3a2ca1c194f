//! How chunk sizes trade deduplication against rows: each user's 30 documents (as
//! `bench/histories.py --write` lays them out) chunked with several FastCDC sizes, counting
//! the bytes of the distinct chunks each user keeps, compressed one by one as storage would
//! (zstd level 1 standing in for TOAST's lz4), the chunk references, and the chunks per backup.
//!
//!     python3 bench/histories.py --write /tmp/histories 20
//!     cargo run --release --example chunk_sizes -- /tmp/histories
//!
//! The server's own sizes (`dailyreps_backup_server::chunking`) are the row marked "(ours)".

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use fastcdc::v2020::FastCDC;

/// (min, average, max) bytes tried.
const SIZES: [(usize, usize, usize); 4] =
    [(1024, 4096, 16_384), (2048, 8192, 32_768), (2048, 16_384, 65_536), (4096, 32_768, 131_072)];
/// A reference to a chunk in a backup's row (a bigint id).
const REFERENCE_BYTES: usize = 8;

fn main() -> anyhow::Result<()> {
    let root = std::env::args().nth(1).context("usage: chunk_sizes DIR (from bench/histories.py --write)")?;
    println!("| history | chunks min/avg/max | stored per user | vs whole documents | chunks a backup |");
    println!("|---|---|---|---|---|");
    for class in sorted_dirs(Path::new(&root))? {
        let users: Vec<Vec<String>> = sorted_dirs(&class)?
            .iter()
            .map(|user| {
                let mut files: Vec<_> =
                    std::fs::read_dir(user)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
                files.sort();
                files.iter().map(std::fs::read_to_string).collect::<Result<Vec<String>, _>>()
            })
            .collect::<Result<_, std::io::Error>>()?;
        let whole: usize = users.iter().flatten().map(|doc| compressed(doc)).sum();
        for (min, avg, max) in SIZES {
            let ours = (min, avg, max)
                == (
                    dailyreps_backup_server::backups::chunking::MIN_CHUNK_BYTES,
                    dailyreps_backup_server::backups::chunking::AVERAGE_CHUNK_BYTES,
                    dailyreps_backup_server::backups::chunking::MAX_CHUNK_BYTES,
                );
            let (mut stored, mut references) = (0, 0);
            for documents in &users {
                let mut kept = HashSet::new();
                for doc in documents {
                    let chunker = FastCDC::new(doc.as_bytes(), min, avg, max);
                    for chunk in chunker {
                        let piece = &doc.as_bytes()[chunk.offset..chunk.offset + chunk.length];
                        references += 1;
                        if kept.insert(piece) {
                            stored += zstd::bulk::compress(piece, 1)?.len();
                        }
                    }
                }
            }
            let per_user = (stored + references * REFERENCE_BYTES) / users.len();
            println!(
                "| {} | {}/{}/{} KiB{} | {:.1} KiB | {:.1}x less | {:.0} |",
                class.file_name().unwrap().to_string_lossy(),
                min / 1024,
                avg / 1024,
                max / 1024,
                if ours { " (ours)" } else { "" },
                per_user as f64 / 1024.0,
                whole as f64 / users.len() as f64 / per_user as f64,
                references as f64 / users.iter().map(Vec::len).sum::<usize>() as f64,
            );
        }
    }
    Ok(())
}

fn compressed(document: &str) -> usize {
    zstd::bulk::compress(document.as_bytes(), 1).map_or(document.len(), |c| c.len())
}

fn sorted_dirs(path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut dirs: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}
