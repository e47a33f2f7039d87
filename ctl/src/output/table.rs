//! The [`Table`] type: columns padded like kubectl's, three spaces apart.

/// A table of strings rendered like kubectl's (columns separated by three spaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

/// Spaces between two columns.
const GAP: usize = 3;

impl Table {
    /// Column widths that fit the headers (unless omitted) and every row.
    pub fn widths(&self, headers: bool) -> Vec<usize> {
        let mut w: Vec<usize> = if headers {
            self.headers.iter().map(|h| h.chars().count()).collect()
        } else {
            vec![0; self.headers.len()]
        };
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// Renders headers (unless `no_headers`) and rows, one line each.
    pub fn render(&self, no_headers: bool) -> String {
        let w = self.widths(!no_headers);
        let mut out = String::new();
        if !no_headers {
            out.push_str(&render_line(&self.headers, &w));
        }
        for r in &self.rows {
            out.push_str(&render_line(r, &w));
        }
        out
    }
}

/// One line of cells padded to `widths` (the last cell is not padded); ends in `\n`.
pub fn render_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if i + 1 < cells.len() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count()) + GAP;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    #[test]
    fn table_pads_columns_with_three_spaces() {
        let t = Table {
            headers: vec!["NAME".into(), "READY".into(), "STATUS".into()],
            rows: vec![
                vec!["web-1".into(), "1/1".into(), "Running".into()],
                vec![
                    "a-much-longer-name".into(),
                    "0/1".into(),
                    "CrashLoopBackOff".into(),
                ],
            ],
        };
        assert_eq!(
            t.render(false),
            "NAME                 READY   STATUS\n\
             web-1                1/1     Running\n\
             a-much-longer-name   0/1     CrashLoopBackOff\n"
        );
        assert_eq!(
            t.render(true).lines().next(),
            Some("web-1                1/1   Running")
        );
    }
}
