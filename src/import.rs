//! CSV rows as a batch of a source table pfsync reads (`pfsync import`): pending payouts or escrow actions
//! from a spreadsheet, for a first run with one's own data. Pure: text in, a typed batch out, or the line and
//! column that is wrong. Money is parsed exactly from its text (`12.50`), never through a float; a cell that
//! does not hold its column's type stops the import before anything is written.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::DataType;

use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::tables::TableSpec;
use crate::tables::spec::{ColumnType, Writer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("line {line}: {detail}")]
    Csv { line: u64, detail: String },
    #[error("the file has no header row")]
    NoHeader,
    #[error("the header has no column {column}, which {table} requires (columns: {columns})")]
    Missing { column: &'static str, table: &'static str, columns: String },
    #[error("the header's column {column:?} is not a column of {table} (its columns: {columns})")]
    Unknown { column: String, table: &'static str, columns: String },
    #[error("the header names {column:?} twice")]
    Repeated { column: String },
    #[error("line {line}, column {column}: {detail}")]
    Cell { line: u64, column: &'static str, detail: String },
    #[error("{column} {key:?} is on lines {first} and {second}: an id names one row")]
    DuplicateKey { column: &'static str, key: String, first: u64, second: u64 },
    #[error("the file has a header but no row")]
    NoRows,
    #[error("{0} is not a table pfsync imports into")]
    NotASource(&'static str),
    #[error("building the batch failed: {0}")]
    Arrow(String),
}

/// The rows of one import: the batch in the table's schema, and each row's key (its first column: `payout_id`,
/// `action_id`) with the line it came from.
#[derive(Debug)]
pub struct Rows {
    pub batch: RecordBatch,
    pub keys: Vec<(String, u64)>,
}

/// One cell of text as its column's value.
enum Cell {
    Text(String),
    Money(i128),
    Instant(i64),
}

fn parse_cell(kind: ColumnType, text: &str) -> Result<Cell, String> {
    match kind {
        ColumnType::String => Ok(Cell::Text(text.to_string())),
        ColumnType::Money => Usd::parse(text).map(|u| Cell::Money(u.to_decimal128())).map_err(|e| e.to_string()),
        ColumnType::Timestamp => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Cell::Instant(t.timestamp_micros()))
            .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-06-30T12:00:00Z ({e})")),
        other => Err(format!("a column of type {} is not imported from CSV", other.sql())),
    }
}

/// `csv` (a header row, then rows) as rows of `spec`. Columns may come in any order; a nullable column the
/// header leaves out is null, and `requested_by` is `requested_by` when the header has none. An empty cell is
/// null, and refused in a column that may not be null.
pub fn rows(spec: &'static TableSpec, csv: &[u8], requested_by: &str) -> Result<Rows, ImportError> {
    let Writer::Upstream { requires, .. } = spec.writer else {
        return Err(ImportError::NotASource(spec.name));
    };
    let columns = || spec.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(csv);
    let header = reader.headers().map_err(|e| csv_error(&e))?.clone();
    if header.is_empty() || header.iter().all(str::is_empty) {
        return Err(ImportError::NoHeader);
    }
    let mut position: HashMap<&'static str, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let Some(c) = spec.columns.iter().find(|c| c.name == name) else {
            return Err(ImportError::Unknown { column: name.to_string(), table: spec.name, columns: columns() });
        };
        if position.insert(c.name, i).is_some() {
            return Err(ImportError::Repeated { column: name.to_string() });
        }
    }
    if let Some(column) = requires.iter().find(|r| !position.contains_key(**r)) {
        return Err(ImportError::Missing { column, table: spec.name, columns: columns() });
    }
    let key_column = spec.columns[0].name;
    let mut cells: Vec<Vec<Option<Cell>>> = spec.columns.iter().map(|_| Vec::new()).collect();
    let mut keys: Vec<(String, u64)> = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&e))?;
        let line = record.position().map_or(0, |p| p.line());
        for (c, out) in spec.columns.iter().zip(cells.iter_mut()) {
            let text = position.get(c.name).and_then(|i| record.get(*i)).unwrap_or("");
            let value = if text.is_empty() {
                if c.name == "requested_by" && !position.contains_key("requested_by") {
                    Some(Cell::Text(requested_by.to_string()))
                } else if c.nullable {
                    None
                } else {
                    return Err(ImportError::Cell { line, column: c.name, detail: "is empty; it may not be".into() });
                }
            } else {
                Some(parse_cell(c.kind, text).map_err(|detail| ImportError::Cell { line, column: c.name, detail })?)
            };
            out.push(value);
        }
        let key = record.get(position[key_column]).unwrap_or("").to_string();
        if let Some(first) = seen.insert(key.clone(), line) {
            return Err(ImportError::DuplicateKey { column: key_column, key, first, second: line });
        }
        keys.push((key, line));
    }
    if keys.is_empty() {
        return Err(ImportError::NoRows);
    }
    let arrays: Vec<ArrayRef> = spec.columns.iter().zip(cells).map(|(c, values)| array(c.kind, values)).collect();
    let batch = RecordBatch::try_new(spec.arrow_schema(), arrays).map_err(|e| ImportError::Arrow(e.to_string()))?;
    Ok(Rows { batch, keys })
}

fn array(kind: ColumnType, values: Vec<Option<Cell>>) -> ArrayRef {
    match kind.arrow() {
        DataType::Decimal128(..) => {
            let mut b =
                Decimal128Builder::new().with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE).expect("scale");
            for v in values {
                b.append_option(match v {
                    Some(Cell::Money(m)) => Some(m),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(..) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for v in values {
                b.append_option(match v {
                    Some(Cell::Instant(t)) => Some(t),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for v in values {
                b.append_option(match v {
                    Some(Cell::Text(t)) => Some(t),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
    }
}

fn csv_error(e: &csv::Error) -> ImportError {
    let line = e.position().map_or(0, |p| p.line());
    let detail = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_string(),
        _ => e.to_string(),
    };
    ImportError::Csv { line, detail }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Decimal128Type;

    use super::*;
    use crate::tables::{ESCROW_ACTIONS, PENDING_PAYOUTS, WALLETS};

    #[test]
    fn a_spreadsheets_rows_become_the_tables_typed_rows_in_any_column_order() {
        let csv =
            "reason, amount_usd ,payout_id,agent_id\n\"June, bonus\",12.50,p-1,agent-000001\nJuly,7,p-2,agent-000002\n";
        let r = rows(&PENDING_PAYOUTS, csv.as_bytes(), "pfsync import payouts.csv").unwrap();
        assert_eq!(r.keys, [("p-1".to_string(), 2), ("p-2".to_string(), 3)]);
        let b = &r.batch;
        assert_eq!(b.schema(), PENDING_PAYOUTS.arrow_schema());
        let amounts = b.column_by_name("amount_usd").unwrap().as_primitive::<Decimal128Type>();
        assert_eq!((amounts.value(0), amounts.value(1)), (1250, 700), "exact cents");
        assert_eq!(b.column_by_name("reason").unwrap().as_string::<i32>().value(0), "June, bonus");
        assert!(b.column_by_name("requested_at").unwrap().is_null(0));
        assert_eq!(b.column_by_name("requested_by").unwrap().as_string::<i32>().value(1), "pfsync import payouts.csv");
    }

    #[test]
    fn what_cannot_be_imported_names_its_line_and_column() {
        let err = |csv: &str| rows(&PENDING_PAYOUTS, csv.as_bytes(), "x").unwrap_err().to_string();
        let head = "payout_id,agent_id,amount_usd,reason\n";
        assert!(
            err(&format!("{head}p-1,a,1.001,r\n")).starts_with("line 2, column amount_usd: "),
            "{}",
            err(&format!("{head}p-1,a,1.001,r\n"))
        );
        assert!(err(&format!("{head}p-1,a,12.5O,r\n")).contains("is not a number"));
        assert_eq!(err(&format!("{head},a,1,r\n")), "line 2, column payout_id: is empty; it may not be");
        assert_eq!(
            err(&format!("{head}p-1,a,1,r\np-1,b,2,r\n")),
            "payout_id \"p-1\" is on lines 2 and 3: an id names one row"
        );
        assert_eq!(err(&format!("{head}p-1,a,1\n")), "line 2: 3 fields where the header has 4");
        assert!(err("payout_id,agent_id,amount_usd\np,a,1\n").starts_with("the header has no column reason"));
        assert!(
            err("payout_id,agent,amount_usd,reason\n").starts_with("the header's column \"agent\" is not a column")
        );
        assert_eq!(err(head), "the file has a header but no row");
        assert_eq!(err(""), "the file has no header row");
        let when = "payout_id,agent_id,amount_usd,reason,requested_at\np,a,1,r,yesterday\n";
        assert!(err(when).contains("is not an RFC 3339 time"), "{}", err(when));
        assert_eq!(
            rows(&WALLETS, head.as_bytes(), "x").unwrap_err(),
            ImportError::NotASource("purpleflea.agents.wallets")
        );
    }

    #[test]
    fn escrow_actions_import_with_only_the_columns_an_action_needs() {
        let csv = "action_id,action,create_action_id\nrel-1,release,cre-1\n";
        let r = rows(&ESCROW_ACTIONS, csv.as_bytes(), "x").unwrap();
        assert_eq!(r.batch.num_rows(), 1);
        assert!(r.batch.column_by_name("amount_usd").unwrap().is_null(0));
    }
}
