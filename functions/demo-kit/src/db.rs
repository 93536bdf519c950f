//! Reading cells of [`spindle_sdk::sql`] rows by column name.

use spindle_sdk::sql::{RowSet, Value};

/// One row of a [`RowSet`], read by column name.
pub struct Row<'a> {
    columns: &'a [String],
    cells: &'a [Value],
}

impl<'a> Row<'a> {
    fn cell(&self, column: &str) -> Option<&'a Value> {
        let index = self.columns.iter().position(|name| name == column)?;
        self.cells.get(index)
    }

    /// The text in `column`, or empty when it is null or not text.
    pub fn text(&self, column: &str) -> String {
        match self.cell(column) {
            Some(Value::Text(text)) => text.clone(),
            _ => String::new(),
        }
    }

    /// The text in `column`, `None` when it is null.
    pub fn optional_text(&self, column: &str) -> Option<String> {
        match self.cell(column) {
            Some(Value::Text(text)) => Some(text.clone()),
            _ => None,
        }
    }

    /// The integer in `column`, `None` when it is null.
    pub fn optional_integer(&self, column: &str) -> Option<i64> {
        match self.cell(column) {
            Some(Value::Integer(number)) => Some(*number),
            _ => None,
        }
    }

    /// The integer in `column`, or 0 when it is null or not an integer.
    pub fn integer(&self, column: &str) -> i64 {
        match self.cell(column) {
            Some(Value::Integer(number)) => *number,
            _ => 0,
        }
    }
}

/// The rows of a result set.
pub fn rows(set: &RowSet) -> impl Iterator<Item = Row<'_>> {
    set.rows.iter().map(|cells| Row {
        columns: &set.columns,
        cells,
    })
}

/// The first row, if any.
pub fn first(set: &RowSet) -> Option<Row<'_>> {
    rows(set).next()
}

/// A text parameter.
pub fn text(value: impl Into<String>) -> Value {
    Value::Text(value.into())
}
