//! MariaDB binary log positions as one integer, so a binlog table's watermark is stored and
//! compared like a PostgreSQL LSN: the file's sequence number (the digits after the last `.`
//! of `binlog.000042`) in the high 32 bits, the byte offset in the file in the low 32. Offsets
//! fit: MariaDB caps a binlog file at 1 GiB (`max_binlog_size`), and a transaction larger than
//! that still ends below 4 GiB. The order of the integers is the log's order, since files are
//! numbered upwards and written one after another.

use std::fmt;

use crate::config::TableConfig;
use crate::ident::{Dialect, TableName};

/// A position in the binary log: where an event starts (or the log ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPosition {
    pub file: u32,
    pub offset: u32,
}

impl BinlogPosition {
    /// `binlog.000042` at `offset`; `Err` says why the name is not a binlog file's.
    pub fn from_file(name: &str, offset: u64) -> Result<BinlogPosition, String> {
        let file = file_number(name)?;
        let offset = u32::try_from(offset)
            .map_err(|_| format!("binlog offset {offset} in {name} exceeds 4 GiB"))?;
        Ok(BinlogPosition { file, offset })
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.file) << 32) | u64::from(self.offset)
    }

    pub fn decode(position: u64) -> BinlogPosition {
        BinlogPosition {
            file: (position >> 32) as u32,
            offset: (position & 0xffff_ffff) as u32,
        }
    }

    /// The file's name, given any file of the same log (`SHOW MASTER STATUS`'s): the same
    /// base name, and the number zero-padded to six digits as the server pads it (past
    /// 999999 the number simply grows).
    pub fn file_name(self, sibling: &str) -> String {
        let base = sibling.rsplit_once('.').map_or(sibling, |(base, _)| base);
        format!("{base}.{:06}", self.file)
    }
}

/// The sequence number of a binlog file name.
pub fn file_number(name: &str) -> Result<u32, String> {
    let digits = name
        .rsplit_once('.')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("'{name}' is not a binary log file name (base.NNNNNN)"))?;
    digits
        .parse::<u32>()
        .map_err(|e| format!("'{name}': file number out of range: {e}"))
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file {:06} offset {}", self.file, self.offset)
    }
}

/// What a MariaDB server and the reading user need for binlog CDC of `table`, as SQL for an
/// administrator (`sluice cdc setup --print`): the settings (also to be kept in the server's
/// configuration, where `log_bin` and `server_id` are set), and the grants, for `<user>`.
pub fn setup_sql(table: &TableConfig) -> Result<Vec<String>, String> {
    let name = TableName::parse(&table.table)?;
    Ok(vec![
        "SET GLOBAL binlog_format = 'ROW'".into(),
        "SET GLOBAL binlog_row_image = 'FULL'".into(),
        "SET GLOBAL binlog_row_metadata = 'FULL'".into(),
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO <user>".into(),
        format!("GRANT SELECT ON {} TO <user>", name.quoted(Dialect::Mysql)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_like_the_log() {
        let a = BinlogPosition::from_file("binlog.000009", 1_073_741_900).unwrap();
        let b = BinlogPosition::from_file("binlog.000010", 4).unwrap();
        assert!(a.encode() < b.encode(), "a later file is later in the log");
        assert_eq!(BinlogPosition::decode(a.encode()), a);
        assert_eq!(BinlogPosition::decode(b.encode()), b);
        assert_eq!(b.file_name("mysql-bin.000001"), "mysql-bin.000010");
        // Past 999999 the number grows: an earlier file keeps its six digits.
        assert_eq!(
            BinlogPosition {
                file: 999_999,
                offset: 4
            }
            .file_name("binlog.1000000"),
            "binlog.999999"
        );
        assert_eq!(
            BinlogPosition {
                file: 1_234_567,
                offset: 4
            }
            .file_name("/var/log/binlog.000001"),
            "/var/log/binlog.1234567"
        );
        assert_eq!(a.to_string(), "file 000009 offset 1073741900");
        // The stored integer is an i64 watermark: the highest file number still fits.
        assert!(
            i64::try_from(
                BinlogPosition {
                    file: u32::MAX >> 1,
                    offset: u32::MAX
                }
                .encode()
            )
            .is_ok()
        );
    }

    #[test]
    fn names_that_are_not_binlog_files_are_refused() {
        for bad in ["binlog", "binlog.", "binlog.00a1", "binlog.99999999999"] {
            assert!(file_number(bad).is_err(), "{bad}");
        }
        assert!(BinlogPosition::from_file("binlog.000001", 1 << 33).is_err());
    }
}
