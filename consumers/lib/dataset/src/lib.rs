//! Reading a data set: one way to open a data file (plain or gzip, told by its magic bytes,
//! whatever its name) and one way to turn its rows into events by the feature spec. send_data,
//! the trainer's bootstrap, `driftline drift` and `driftline backtest` all read through it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub mod rows;

/// Errors opening a data file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a data file, decompressing it when it starts with the gzip magic bytes (whatever
/// its name).
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    let open_err = |source| Error::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::with_capacity(1 << 16, File::open(path).map_err(open_err)?);
    let mut magic = [0u8; 2];
    let n = read_prefix(&mut file, &mut magic).map_err(open_err)?;
    let file = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    if n == 2 && magic == GZIP_MAGIC {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(file),
        )))
    } else {
        Ok(Box::new(file))
    }
}

/// Whether the file starts with the gzip magic bytes (for a reader that handles a plain file
/// its own, faster way).
pub fn is_gzip(path: &Path) -> Result<bool> {
    let open_err = |source| Error::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 2];
    let n = read_prefix(&mut File::open(path).map_err(open_err)?, &mut magic).map_err(open_err)?;
    Ok(n == 2 && magic == GZIP_MAGIC)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn read_prefix(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A CSV reader over the file; rows may have any number of fields (we report a wrong count
/// per row rather than fail the file).
pub fn csv_reader(path: &Path) -> Result<csv::Reader<Box<dyn Read + Send>>> {
    Ok(csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzip_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let text = "a,b\n1,2\n3,4\n";
        let plain = dir.path().join("x.csv");
        std::fs::write(&plain, text).unwrap();
        // The name says nothing: the magic bytes decide.
        let gz = dir.path().join("x.data");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        for path in [&plain, &gz] {
            let mut s = String::new();
            open(path).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, text);
        }
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            read_prefix(&mut open(&empty).unwrap(), &mut [0u8; 4]).unwrap(),
            0
        );
    }
}
