//! A 3 x 5 pixel font for the labels of pictures (class names, counts, axis titles): digits,
//! letters (drawn as capitals), `_ - . : % / ( )` and a question mark for anything else. Small enough to
//! need no font file; drawn at twice its size it stays legible in a PNG viewer.

/// Rows of a glyph, top first; bit 2 is the left column.
pub type Glyph = [u8; 5];

pub const WIDTH: usize = 3;
pub const HEIGHT: usize = 5;

const DIGITS: [Glyph; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

const LETTERS: [Glyph; 26] = [
    [2, 5, 7, 5, 5], // A
    [6, 5, 6, 5, 6], // B
    [3, 4, 4, 4, 3], // C
    [6, 5, 5, 5, 6], // D
    [7, 4, 6, 4, 7], // E
    [7, 4, 6, 4, 4], // F
    [3, 4, 5, 5, 3], // G
    [5, 5, 7, 5, 5], // H
    [7, 2, 2, 2, 7], // I
    [1, 1, 1, 5, 2], // J
    [5, 5, 6, 5, 5], // K
    [4, 4, 4, 4, 7], // L
    [5, 7, 7, 5, 5], // M
    [6, 5, 5, 5, 5], // N
    [2, 5, 5, 5, 2], // O
    [6, 5, 6, 4, 4], // P
    [2, 5, 5, 6, 3], // Q
    [6, 5, 6, 5, 5], // R
    [3, 4, 2, 1, 6], // S
    [7, 2, 2, 2, 2], // T
    [5, 5, 5, 5, 7], // U
    [5, 5, 5, 5, 2], // V
    [5, 5, 5, 7, 5], // W
    [5, 5, 2, 5, 5], // X
    [5, 5, 2, 2, 2], // Y
    [7, 1, 2, 4, 7], // Z
];

/// The glyph of `c`.
pub fn glyph(c: char) -> Glyph {
    match c {
        '0'..='9' => DIGITS[c as usize - '0' as usize],
        'a'..='z' => LETTERS[c as usize - 'a' as usize],
        'A'..='Z' => LETTERS[c as usize - 'A' as usize],
        ' ' => [0; 5],
        '_' => [0, 0, 0, 0, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        _ => [6, 1, 2, 0, 2], // ?
    }
}

/// An RGB canvas to draw text on.
pub struct Canvas<'a> {
    pub px: &'a mut [u8],
    pub w: usize,
    pub h: usize,
}

impl Canvas<'_> {
    fn dot(&mut self, x: usize, y: usize, ink: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            self.px[i..i + 3].copy_from_slice(&ink);
        }
    }

    /// `text` left to right from (x, y), each font pixel `scale` x `scale`, one blank font
    /// column between letters. Returns the width drawn.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, ink: [u8; 3]) -> usize {
        for (k, c) in text.chars().enumerate() {
            let g = glyph(c);
            for (gy, bits) in g.iter().enumerate() {
                for gx in 0..WIDTH {
                    if bits & (4 >> gx) != 0 {
                        for d in 0..scale * scale {
                            let px = x + (k * (WIDTH + 1) + gx) * scale + d % scale;
                            self.dot(px, y + gy * scale + d / scale, ink);
                        }
                    }
                }
            }
        }
        text_width(text, scale)
    }

    /// `text` bottom to top (turned a quarter left), its baseline at column `x + height`, its
    /// first letter ending at row `y_bottom`.
    pub fn text_up(&mut self, x: usize, y_bottom: usize, text: &str, scale: usize, ink: [u8; 3]) {
        for (k, c) in text.chars().enumerate() {
            let g = glyph(c);
            for (gy, bits) in g.iter().enumerate() {
                for gx in 0..WIDTH {
                    if bits & (4 >> gx) != 0 {
                        // Font (gx, gy) -> image (x + gy, y_bottom - along).
                        let along = (k * (WIDTH + 1) + gx) * scale;
                        for d in 0..scale * scale {
                            let (ax, ay) = (gy * scale + d % scale, along + d / scale);
                            if ay <= y_bottom {
                                self.dot(x + ax, y_bottom - ay, ink);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Pixels `text` takes along its line.
pub fn text_width(text: &str, scale: usize) -> usize {
    let n = text.chars().count();
    (n * (WIDTH + 1)).saturating_sub(1) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lands_where_asked_and_turned_text_reads_upward() {
        let (w, h) = (20, 20);
        let mut px = vec![0u8; w * h * 3];
        let mut c = Canvas { px: &mut px, w, h };
        // "L" at scale 1: its left column is set on all five rows, its foot is three wide.
        assert_eq!(c.text(1, 1, "L", 1, [255; 3]), 3);
        let on = |px: &[u8], x: usize, y: usize| px[(y * w + x) * 3] == 255;
        assert!((1..6).all(|y| on(&px, 1, y)));
        assert!(on(&px, 3, 5) && !on(&px, 3, 4) && !on(&px, 2, 1));
        // Turned: the "L"'s stem becomes the bottom row, read from left (top of the letter) to
        // right; its foot runs up the right-hand edge.
        let mut px2 = vec![0u8; w * h * 3];
        let mut c = Canvas { px: &mut px2, w, h };
        c.text_up(10, 15, "L", 1, [255; 3]);
        assert!(
            (10..15).all(|x| on(&px2, x, 15)),
            "the stem along the bottom"
        );
        assert!(
            (13..16).all(|y| on(&px2, 14, y)),
            "the foot up the right edge"
        );
        assert!(!on(&px2, 10, 13));
        assert_eq!(text_width("ab", 2), 14);
        assert_eq!(glyph('Q'), glyph('q'));
    }
}
