//! Reads the tables of the corpora's `INDEX.md` files: their rows are the oracle the tests compare with.

use std::collections::BTreeMap;

/// One table row: column header → cell text.
pub type Row = BTreeMap<String, String>;

/// Every table whose header row starts with `first_column`, in document order. (Headings are not
/// used: the hwloc INDEX has tables whose `####` heading is missing.)
pub fn tables(markdown: &str, first_column: &str) -> Vec<Vec<Row>> {
    let mut tables: Vec<Vec<Row>> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for line in markdown.lines() {
        let Some(cells) = cells(line) else {
            header = None;
            continue;
        };
        match &header {
            None if cells.first().is_some_and(|c| c == first_column) => {
                header = Some(cells);
                tables.push(Vec::new());
            }
            None => {}
            Some(_) if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) => {}
            Some(columns) => {
                let row: Row = columns.iter().cloned().zip(cells).collect();
                if let Some(table) = tables.last_mut() {
                    table.push(row);
                }
            }
        }
    }
    tables
}

fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_by_their_first_column() {
        let md = "#### a.tar.bz2\n\n| BDF | class |\n|---|---|\n| 0000:00:00.0 | 0x060000 |\n\ntext\n\n| ibdev | x |\n|---|---|\n| qib0 | 1 |\n\n| BDF | class |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n";
        let found = tables(md, "BDF");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].len(), 1);
        assert_eq!(found[0][0]["class"], "0x060000");
        assert_eq!(found[1][1]["BDF"], "3");
    }
}
