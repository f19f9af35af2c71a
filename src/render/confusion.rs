//! Confusion matrices as pictures: rows the true classes, columns the answers, each cell shaded
//! by its share of the row and labelled with its count; the class names on both axes (column
//! names turned to read upward), axis titles, a scale of the shading, and below the grid how
//! many clips were answered right, so the picture says its result without the log beside it.

use std::path::Path;

use super::glyphs::{text_width, Canvas, HEIGHT};
use super::{write_rgb, RenderError};

const CELL: usize = 28;
/// Font pixels are drawn 2 x 2.
const SCALE: usize = 2;
/// Longest label drawn; longer ones are cut with a trailing `.`.
const MAX_CHARS: usize = 18;
const INK: [u8; 3] = [0, 0, 0];
const GAP: usize = 6;

fn short(label: &str) -> String {
    if label.chars().count() <= MAX_CHARS {
        label.to_string()
    } else {
        label.chars().take(MAX_CHARS - 1).chain(['.']).collect()
    }
}

/// `cm[true][answer]` as RGB pixels `(w, h, data)`: `rows` names the true classes, `cols` the
/// answers (the same classes, perhaps with an extra "unknown"). Row and column counts must
/// match `rows` and `cols`; missing names are drawn as their index.
pub fn confusion_rgb(
    cm: &[Vec<usize>],
    rows: &[String],
    cols: &[String],
) -> (usize, usize, Vec<u8>) {
    let n_rows = cm.len();
    let n_cols = cm.iter().map(Vec::len).max().unwrap_or(0);
    let name = |names: &[String], i: usize| short(names.get(i).map_or(&i.to_string(), |s| s));
    let row_names: Vec<String> = (0..n_rows).map(|i| name(rows, i)).collect();
    let col_names: Vec<String> = (0..n_cols).map(|i| name(cols, i)).collect();
    let longest = |v: &[String]| v.iter().map(|s| text_width(s, SCALE)).max().unwrap_or(0);
    let title_h = HEIGHT * SCALE + GAP;
    // Left: the turned "true class" title, the row names; top: the title, the column names.
    let left = title_h + longest(&row_names) + GAP;
    let top = title_h + longest(&col_names) + GAP;
    let legend = 2 * GAP + 12 + text_width("100%", SCALE);
    let total: usize = cm.iter().flatten().sum();
    let right: usize = (0..n_rows.min(n_cols))
        .map(|i| cm[i].get(i).copied().unwrap_or(0))
        .sum();
    let footer = format!(
        "{right} of {total} right ({:.1}%)",
        100.0 * right as f64 / total.max(1) as f64
    );
    let (w, h) = (
        (left + n_cols * CELL + 1 + legend).max(GAP + text_width(&footer, SCALE) + GAP),
        top + n_rows * CELL + 1 + GAP + HEIGHT * SCALE + GAP,
    );
    let mut px = vec![255u8; w * h * 3];
    let mut canvas = Canvas { px: &mut px, w, h };
    // Titles.
    let grid_w = n_cols * CELL;
    let t = "answer";
    canvas.text(
        left + grid_w.saturating_sub(text_width(t, SCALE)) / 2,
        2,
        t,
        SCALE,
        INK,
    );
    let t = "true class";
    let grid_h = n_rows * CELL;
    canvas.text_up(2, top + (grid_h + text_width(t, SCALE)) / 2, t, SCALE, INK);
    for (r, s) in row_names.iter().enumerate() {
        let x = left - GAP - text_width(s, SCALE);
        canvas.text(
            x,
            top + r * CELL + (CELL - HEIGHT * SCALE) / 2,
            s,
            SCALE,
            INK,
        );
    }
    for (c, s) in col_names.iter().enumerate() {
        canvas.text_up(
            left + c * CELL + (CELL - HEIGHT * SCALE) / 2,
            top - GAP,
            s,
            SCALE,
            INK,
        );
    }
    for (r, row) in cm.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let share = count as f64 / total.max(1) as f64;
            let col = colorous::BLUES.eval_continuous(share);
            let (x0, y0) = (left + c * CELL, top + r * CELL);
            for y in y0 + 1..y0 + CELL {
                let i = (y * w + x0 + 1) * 3;
                for p in canvas.px[i..i + (CELL - 1) * 3].chunks_exact_mut(3) {
                    p.copy_from_slice(&[col.r, col.g, col.b]);
                }
            }
            if count > 0 {
                let text = count.to_string();
                let ink = if share > 0.55 { [255; 3] } else { INK };
                let tx = x0 + CELL.saturating_sub(text_width(&text, SCALE)) / 2;
                canvas.text(tx, y0 + (CELL - HEIGHT * SCALE) / 2, &text, SCALE, ink);
            }
        }
    }
    // The shading's scale: a bar from 0 % (bottom) to 100 % of the row (top).
    let bx = left + grid_w + 1 + GAP;
    let bar_h = grid_h.max(2);
    for y in 0..bar_h {
        let col = colorous::BLUES.eval_continuous(1.0 - y as f64 / (bar_h - 1) as f64);
        for x in bx..bx + 12 {
            let i = ((top + y) * w + x) * 3;
            canvas.px[i..i + 3].copy_from_slice(&[col.r, col.g, col.b]);
        }
    }
    canvas.text(bx + 12 + 3, top, "100%", SCALE, INK);
    canvas.text(bx + 12 + 3, top + bar_h - HEIGHT * SCALE, "0%", SCALE, INK);
    canvas.text(GAP, top + grid_h + 1 + GAP, &footer, SCALE, INK);
    (w, h, px)
}

/// Writes [`confusion_rgb`] as a PNG (atomically: never a half-written file).
pub fn write_confusion_png(
    path: &Path,
    cm: &[Vec<usize>],
    rows: &[String],
    cols: &[String],
) -> Result<(), RenderError> {
    if cm.is_empty() || cm.iter().all(Vec::is_empty) {
        return Err(RenderError::Empty {
            n_frames: 0,
            n_mels: 0,
        });
    }
    let (w, h, px) = confusion_rgb(cm, rows, cols);
    write_rgb(path, w, h, &px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_shaded_by_row_share_and_names_take_the_margins() {
        let names = vec!["dog".to_string(), "rain".to_string()];
        let (w, h, px) = confusion_rgb(&[vec![9, 1], vec![0, 0]], &names, &names);
        let title = HEIGHT * SCALE + GAP;
        // "rain" is the longest name: 4 letters of 4 font columns less one, twice.
        let (left, top) = (title + 30 + GAP, title + 30 + GAP);
        let footer_y = top + 2 * CELL + 1 + GAP;
        assert_eq!(h, footer_y + HEIGHT * SCALE + GAP);
        assert!(w > left + 2 * CELL);
        let at = |x: usize, y: usize| &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
        // Cell corners (no digits there): 90 % is darker than 10 %; an empty row is the
        // palette's lightest; the grid's top-left corner line is white.
        assert!(at(left + 2, top + 2)[0] < at(left + CELL + 2, top + 2)[0]);
        assert_eq!(
            at(left + 2, top + CELL + 2),
            at(left + CELL + 2, top + CELL + 2)
        );
        assert_eq!(at(left, top), [255, 255, 255]);
        // The row names are drawn in the left margin, the column names in the top one.
        let inked = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1).any(|y| (x0..x1).any(|x| at(x, y) == [0, 0, 0]))
        };
        assert!(inked(title, left, top, top + CELL), "row name");
        assert!(inked(left, left + CELL, title, top), "column name");
        assert!(!inked(0, left, 0, title), "the top-left corner stays blank");
        // "9 of 10 right (90.0%)" below the grid.
        assert!(inked(0, w, footer_y, h), "the result line");
        // (Right of the turned "true class", which overhangs a grid of two rows.)
        assert!(
            !inked(title, w, top + 2 * CELL + 1, footer_y),
            "a gap above it"
        );
    }

    #[test]
    fn a_non_square_matrix_and_an_empty_one() {
        let rows = vec!["a".to_string()];
        let cols = vec!["a".to_string(), "unknown".to_string()];
        let (w, h, _) = confusion_rgb(&[vec![1, 2]], &rows, &cols);
        assert!(w > 2 * CELL && h > CELL);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        assert!(write_confusion_png(&p, &[], &[], &[]).is_err());
        write_confusion_png(&p, &[vec![1, 2]], &rows, &cols).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 100);
        assert_eq!(short("a_very_long_class_name_indeed"), "a_very_long_class.");
    }
}
