//! Text layout and rasterisation of slides and posters.
//!
//! Layout is plain: each block (heading, body, help, URL) is word-wrapped
//! greedily to the text column and centred line by line; if the whole
//! stack does not fit the column's height every size shrinks by the same
//! factor until it does. Glyphs land on whole pixels, so the output depends
//! only on the inputs and the embedded fonts.

use std::sync::OnceLock;

use fontdue::{Font, FontSettings};

use crate::{RgbFrame, Script};

const BACKGROUND: [u8; 3] = [8, 18, 44];
/// Amber: the heading and the stripes, readable on the dark background and
/// still distinct after 4:2:0 chroma subsampling.
const WARNING: [u8; 3] = [255, 190, 0];
const BODY: [u8; 3] = [255, 255, 255];
const HELP: [u8; 3] = [210, 220, 235];
const URL: [u8; 3] = [140, 205, 255];

/// Size and timing of what gets rendered and encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Pixels; must be even for the video (4:2:0 chroma).
    pub width: u32,
    pub height: u32,
    /// How long each slide is shown before [`crate::encode_video`] fits the
    /// total into 10–30 s.
    pub seconds_per_slide: u32,
    pub fps: u32,
    /// The operator's photo, scaled into the left third; the text moves to
    /// the right two thirds. A frame whose buffer does not match its size is
    /// ignored.
    pub side_image: Option<RgbFrame>,
}

impl Default for RenderOptions {
    /// 854x480 (16:9 at 480 lines), 8 s per slide, 25 fps, no side image.
    fn default() -> Self {
        RenderOptions {
            width: 854,
            height: 480,
            seconds_per_slide: 8,
            fps: 25,
            side_image: None,
        }
    }
}

/// One slide per script (language): text wrapped and centred, large
/// heading, body, then help line and URL. With a side image, the image
/// fills the left third and the text the rest.
pub fn render_slide(script: &Script, opts: &RenderOptions) -> RgbFrame {
    let mut canvas = Canvas::new(opts.width, opts.height);
    let stripe = stripe_height(opts.height);
    canvas.fill_rect(0, 0, opts.width, stripe, WARNING);
    canvas.fill_rect(0, opts.height.saturating_sub(stripe), opts.width, stripe, WARNING);
    let inner = Rect {
        x: 0,
        y: stripe,
        w: opts.width,
        h: opts.height.saturating_sub(2 * stripe),
    };
    let text_area = place_side_image(&mut canvas, inner, opts.side_image.as_ref());
    draw_script(&mut canvas, text_area, script, opts.height);
    canvas.into_frame()
}

/// A poster: every script stacked top to bottom on one image, each section
/// `opts.height` tall (so `opts.width` x `opts.height * scripts.len()`),
/// separated by stripes; the side image, if any, fills the left third of
/// the whole poster. No scripts gives an empty `opts.width` x `opts.height`
/// background.
pub fn render_poster(scripts: &[Script], opts: &RenderOptions) -> RgbFrame {
    let sections = u32::try_from(scripts.len().max(1)).unwrap_or(u32::MAX);
    let height = opts.height.saturating_mul(sections);
    let mut canvas = Canvas::new(opts.width, height);
    let stripe = stripe_height(opts.height);
    // Each section gets the slide's top and bottom stripes, so sections are
    // separated by a double stripe.
    for i in 0..sections {
        let top = i.saturating_mul(opts.height);
        canvas.fill_rect(0, top, opts.width, stripe, WARNING);
        canvas.fill_rect(
            0,
            (top + opts.height).saturating_sub(stripe),
            opts.width,
            stripe,
            WARNING,
        );
    }
    let inner = Rect {
        x: 0,
        y: stripe,
        w: opts.width,
        h: height.saturating_sub(2 * stripe),
    };
    let text_column = place_side_image(&mut canvas, inner, opts.side_image.as_ref());
    for (i, script) in scripts.iter().enumerate() {
        let top = i as u32 * opts.height;
        let section = Rect {
            x: text_column.x,
            y: top + stripe,
            w: text_column.w,
            h: opts.height.saturating_sub(2 * stripe),
        };
        draw_script(&mut canvas, section, script, opts.height);
    }
    canvas.into_frame()
}

fn stripe_height(height: u32) -> u32 {
    (height / 48).max(2)
}

struct Fonts {
    regular: Font,
    bold: Font,
}

/// Parsing DejaVu takes tens of milliseconds; do it once per process.
fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| {
        let load = |bytes: &'static [u8]| {
            // The fonts are compiled in and covered by tests; failing to
            // parse them is a build defect, not an input error.
            Font::from_bytes(bytes, FontSettings::default()).expect("embedded DejaVu font parses")
        };
        Fonts {
            regular: load(include_bytes!("../assets/DejaVuSans.ttf")),
            bold: load(include_bytes!("../assets/DejaVuSans-Bold.ttf")),
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// Draws the side image into the left third of `area` and returns what is
/// left for text. Without a (usable) image the text gets all of `area`
/// minus margins.
fn place_side_image(canvas: &mut Canvas, area: Rect, image: Option<&RgbFrame>) -> Rect {
    let margin = (area.h.min(area.w) / 16).max(4);
    let image = image.filter(|i| i.is_consistent() && i.width > 0 && i.height > 0);
    let Some(image) = image else {
        return Rect {
            x: area.x + margin,
            y: area.y + margin,
            w: area.w.saturating_sub(2 * margin),
            h: area.h.saturating_sub(2 * margin),
        };
    };
    let column = area.w / 3;
    let box_w = column.saturating_sub(margin + margin / 2).max(1);
    let box_h = area.h.saturating_sub(2 * margin).max(1);
    // Fit inside the box, keeping the aspect ratio.
    let (w, h) = if u64::from(image.width) * u64::from(box_h) > u64::from(image.height) * u64::from(box_w) {
        let h = (u64::from(image.height) * u64::from(box_w) / u64::from(image.width)) as u32;
        (box_w, h.max(1))
    } else {
        let w = (u64::from(image.width) * u64::from(box_h) / u64::from(image.height)) as u32;
        (w.max(1), box_h)
    };
    if let Some(src) = image::RgbImage::from_raw(image.width, image.height, image.rgb.clone()) {
        let scaled = image::imageops::resize(&src, w, h, image::imageops::FilterType::Triangle);
        let x0 = area.x + margin + (box_w - w) / 2;
        let y0 = area.y + margin + (box_h - h) / 2;
        canvas.blit(x0, y0, w, h, scaled.as_raw());
    }
    Rect {
        x: area.x + column + margin / 2,
        y: area.y + margin,
        w: area.w.saturating_sub(column + margin / 2 + margin),
        h: area.h.saturating_sub(2 * margin),
    }
}

#[derive(Clone, Copy)]
enum Weight {
    Regular,
    Bold,
}

/// One block of the script before wrapping.
struct Block<'a> {
    text: &'a str,
    weight: Weight,
    /// Font size as a fraction of the reference height.
    size: f32,
    colour: [u8; 3],
    /// Space after the block, in multiples of its font size.
    gap_after: f32,
}

struct Line {
    text: String,
    weight: Weight,
    px: f32,
    colour: [u8; 3],
    width: f32,
    /// Vertical space the line takes, gap after it included.
    advance: f32,
    ascent: f32,
}

fn blocks(script: &Script) -> [Block<'_>; 4] {
    [
        Block {
            text: &script.heading,
            weight: Weight::Bold,
            size: 0.13,
            colour: WARNING,
            gap_after: 0.35,
        },
        Block {
            text: &script.body,
            weight: Weight::Regular,
            size: 0.055,
            colour: BODY,
            gap_after: 1.0,
        },
        Block {
            text: &script.help,
            weight: Weight::Regular,
            size: 0.047,
            colour: HELP,
            gap_after: 0.25,
        },
        Block {
            text: &script.url,
            weight: Weight::Bold,
            size: 0.05,
            colour: URL,
            gap_after: 0.0,
        },
    ]
}

/// Lays out and draws one script, centred in `area`. `reference_height`
/// sets the font sizes, so a poster section matches a slide.
fn draw_script(canvas: &mut Canvas, area: Rect, script: &Script, reference_height: u32) {
    let fonts = fonts();
    let max_width = area.w as f32;
    let lines = fit(fonts, script, area, reference_height);
    let total: f32 = lines.iter().map(|l| l.advance).sum();
    let mut y = area.y as f32 + ((area.h as f32 - total) / 2.0).max(0.0);
    for line in &lines {
        let font = font_of(fonts, line.weight);
        let x = area.x as f32 + ((max_width - line.width) / 2.0).max(0.0);
        let baseline = (y + line.ascent).round() as i32;
        draw_line(
            canvas,
            font,
            &line.text,
            line.px,
            x.round() as i32,
            baseline,
            line.colour,
        );
        y += line.advance;
    }
}

/// The script's lines at the largest scale (at most 1) that fits `area`.
fn fit(fonts: &Fonts, script: &Script, area: Rect, reference_height: u32) -> Vec<Line> {
    let max_width = area.w as f32;
    let mut scale = 1.0f32;
    loop {
        let reference = reference_height as f32 * scale;
        let lines = layout(fonts, script, reference, max_width);
        let height: f32 = lines.iter().map(|l| l.advance).sum();
        // Shrink in 8 % steps until the stack fits and no word has to be
        // split (a long heading word, say in Cyrillic, reads better
        // smaller than broken); give up at a quarter size so absurd input
        // cannot loop forever (words are then split, text clipped).
        let fits = height <= area.h as f32 && words_fit(fonts, script, reference, max_width);
        if fits || scale < 0.25 {
            return lines;
        }
        scale *= 0.92;
    }
}

fn font_of(fonts: &Fonts, weight: Weight) -> &Font {
    match weight {
        Weight::Regular => &fonts.regular,
        Weight::Bold => &fonts.bold,
    }
}

/// Whether every word of every block fits on a line by itself.
fn words_fit(fonts: &Fonts, script: &Script, reference: f32, max_width: f32) -> bool {
    blocks(script).iter().all(|block| {
        let font = font_of(fonts, block.weight);
        let px = (reference * block.size).max(6.0);
        block
            .text
            .split_whitespace()
            .all(|word| measure(font, word, px) <= max_width)
    })
}

fn layout(fonts: &Fonts, script: &Script, reference: f32, max_width: f32) -> Vec<Line> {
    let mut out = Vec::new();
    for block in blocks(script) {
        let font = font_of(fonts, block.weight);
        let px = (reference * block.size).max(6.0);
        let (ascent, line_height) = match font.horizontal_line_metrics(px) {
            Some(m) => (m.ascent, m.new_line_size),
            None => (px * 0.8, px * 1.2),
        };
        let wrapped = wrap(font, block.text, px, max_width);
        let count = wrapped.len();
        for (i, text) in wrapped.into_iter().enumerate() {
            let gap = if i + 1 == count { block.gap_after * px } else { 0.0 };
            out.push(Line {
                width: measure(font, &text, px),
                text,
                weight: block.weight,
                px,
                colour: block.colour,
                advance: line_height + gap,
                ascent,
            });
        }
    }
    out
}

/// Greedy word wrap; `\n` forces a break, and a word wider than the line is
/// split between characters.
fn wrap(font: &Font, text: &str, px: f32, max_width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut current = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if current.is_empty() {
                word.to_string()
            } else {
                format!("{current} {word}")
            };
            if measure(font, &candidate, px) <= max_width {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            if measure(font, word, px) <= max_width {
                current = word.to_string();
                continue;
            }
            for c in word.chars() {
                current.push(c);
                if measure(font, &current, px) > max_width && current.chars().count() > 1 {
                    current.pop();
                    lines.push(std::mem::take(&mut current));
                    current.push(c);
                }
            }
        }
        if !current.is_empty() {
            lines.push(current);
        }
    }
    lines
}

fn measure(font: &Font, text: &str, px: f32) -> f32 {
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        if let Some(p) = previous {
            width += font.horizontal_kern(p, c, px).unwrap_or(0.0);
        }
        width += font.metrics(c, px).advance_width;
        previous = Some(c);
    }
    width
}

fn draw_line(canvas: &mut Canvas, font: &Font, text: &str, px: f32, x: i32, baseline: i32, colour: [u8; 3]) {
    let mut pen = x as f32;
    let mut previous = None;
    for c in text.chars() {
        if let Some(p) = previous {
            pen += font.horizontal_kern(p, c, px).unwrap_or(0.0);
        }
        let (metrics, coverage) = font.rasterize(c, px);
        let gx = pen.round() as i32 + metrics.xmin;
        let gy = baseline - metrics.height as i32 - metrics.ymin;
        for row in 0..metrics.height {
            for col in 0..metrics.width {
                let alpha = coverage[row * metrics.width + col];
                if alpha > 0 {
                    canvas.blend(gx + col as i32, gy + row as i32, colour, alpha);
                }
            }
        }
        pen += metrics.advance_width;
        previous = Some(c);
    }
}

struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Canvas {
        let frame = RgbFrame::filled(width, height, BACKGROUND);
        Canvas {
            width,
            height,
            rgb: frame.rgb,
        }
    }

    fn into_frame(self) -> RgbFrame {
        RgbFrame {
            width: self.width,
            height: self.height,
            rgb: self.rgb,
        }
    }

    fn index(&self, x: i32, y: i32) -> Option<usize> {
        if x < 0 || y < 0 || x as u32 >= self.width || y as u32 >= self.height {
            return None;
        }
        Some((y as usize * self.width as usize + x as usize) * 3)
    }

    fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
        for yy in y..y.saturating_add(h).min(self.height) {
            for xx in x..x.saturating_add(w).min(self.width) {
                if let Some(i) = self.index(xx as i32, yy as i32) {
                    self.rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
    }

    /// Integer alpha blend, so results do not depend on float rounding.
    fn blend(&mut self, x: i32, y: i32, colour: [u8; 3], alpha: u8) {
        let Some(i) = self.index(x, y) else { return };
        let a = u32::from(alpha);
        for (k, &c) in colour.iter().enumerate() {
            let bg = u32::from(self.rgb[i + k]);
            self.rgb[i + k] = ((u32::from(c) * a + bg * (255 - a) + 127) / 255) as u8;
        }
    }

    fn blit(&mut self, x: u32, y: u32, w: u32, h: u32, rgb: &[u8]) {
        for row in 0..h {
            for col in 0..w {
                let src = ((row * w + col) * 3) as usize;
                if let (Some(dst), Some(px)) = (
                    self.index((x + col) as i32, (y + row) as i32),
                    rgb.get(src..src + 3),
                ) {
                    self.rgb[dst..dst + 3].copy_from_slice(px);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels in columns `x0..x1`, between the stripes, that are much
    /// brighter than the background (luma > 128): text.
    fn bright_pixels(frame: &RgbFrame, x0: u32, x1: u32) -> usize {
        let stripe = stripe_height(480);
        let mut n = 0;
        for y in 0..frame.height {
            if y % 480 < stripe || y % 480 >= 480 - stripe {
                continue;
            }
            for x in x0..x1 {
                let i = ((y * frame.width + x) * 3) as usize;
                let [r, g, b] = [0, 1, 2].map(|k| u32::from(frame.rgb[i + k]));
                if (299 * r + 587 * g + 114 * b) / 1000 > 128 {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn slide_has_requested_size_and_is_deterministic() {
        let opts = RenderOptions::default();
        let en = Script::builtin("en").unwrap();
        let a = render_slide(&en, &opts);
        let b = render_slide(&en, &opts);
        assert_eq!((a.width, a.height), (854, 480));
        assert!(a.is_consistent());
        assert_eq!(a, b);
        assert!(bright_pixels(&a, 0, a.width) > 5_000);
    }

    #[test]
    fn languages_render_differently() {
        let opts = RenderOptions::default();
        let en = render_slide(&Script::builtin("en").unwrap(), &opts);
        let nb = render_slide(&Script::builtin("nb").unwrap(), &opts);
        assert_ne!(en.rgb, nb.rgb);
    }

    #[test]
    fn norwegian_and_cyrillic_letters_have_glyphs() {
        let f = fonts();
        for c in "æøåÆØÅПРЕДУПРЕЖДЕНИЕ".chars() {
            assert!(f.regular.has_glyph(c), "regular lacks {c}");
            assert!(f.bold.has_glyph(c), "bold lacks {c}");
        }
        // And they put ink on the slide: a heading of only these letters.
        let script = Script {
            lang: "test".into(),
            heading: "ПРЕДУПРЕЖДЕНИЕ".into(),
            body: "æøå ÆØÅ".into(),
            help: String::new(),
            url: String::new(),
        };
        let frame = render_slide(&script, &RenderOptions::default());
        assert!(bright_pixels(&frame, 0, frame.width) > 1_000);
    }

    #[test]
    fn long_text_wraps_within_the_column_and_shrinks_to_fit() {
        let font = &fonts().regular;
        let text = "word ".repeat(200);
        let lines = wrap(font, &text, 24.0, 300.0);
        assert!(lines.len() > 10);
        assert!(lines.iter().all(|l| measure(font, l, 24.0) <= 300.0));
        let unbroken = "x".repeat(100);
        let lines = wrap(font, &unbroken, 24.0, 100.0);
        assert!(lines.len() > 1);
        assert_eq!(lines.concat(), unbroken);
        // A very long body still renders without panicking.
        let mut script = Script::builtin("en").unwrap();
        script.body = text;
        let frame = render_slide(&script, &RenderOptions::default());
        assert!(frame.is_consistent());
    }

    #[test]
    fn long_words_shrink_the_text_instead_of_being_split() {
        let script = Script {
            lang: "test".into(),
            heading: "ПРЕДУПРЕЖДЕНИЕ".into(),
            body: "Тест".into(),
            help: String::new(),
            url: String::new(),
        };
        // The text column beside a side image at the default size.
        let area = Rect {
            x: 0,
            y: 0,
            w: 520,
            h: 400,
        };
        let lines = fit(fonts(), &script, area, 480);
        assert_eq!(lines[0].text, "ПРЕДУПРЕЖДЕНИЕ");
        assert!(lines[0].width <= 520.0);
    }

    #[test]
    fn explicit_newline_breaks_the_line() {
        let font = &fonts().regular;
        assert_eq!(wrap(font, "one\ntwo", 24.0, 1000.0), vec!["one", "two"]);
    }

    #[test]
    fn side_image_takes_the_left_third_and_text_moves_right() {
        let photo = RgbFrame::filled(300, 400, [0, 200, 0]);
        let opts = RenderOptions {
            side_image: Some(photo),
            ..RenderOptions::default()
        };
        let frame = render_slide(&Script::builtin("en").unwrap(), &opts);
        let third = frame.width / 3;
        let green = frame
            .rgb
            .chunks_exact(3)
            .enumerate()
            .filter(|(i, p)| *p == [0, 200, 0] && (*i as u32 % frame.width) < third)
            .count();
        assert!(green > 20_000, "photo drawn in the left third ({green} px)");
        assert!(bright_pixels(&frame, third, frame.width) > 3_000);
        // Text stays out of the photo's column (the photo's green has luma
        // 117, below the threshold).
        assert_eq!(bright_pixels(&frame, 0, third - 10), 0);
    }

    #[test]
    fn poster_stacks_one_section_per_script() {
        let scripts: Vec<Script> = Script::builtin_languages()
            .iter()
            .map(|l| Script::builtin(l).unwrap())
            .collect();
        let opts = RenderOptions::default();
        let poster = render_poster(&scripts, &opts);
        assert_eq!((poster.width, poster.height), (854, 960));
        let half = poster.rgb.len() / 2;
        let top = RgbFrame {
            width: 854,
            height: 480,
            rgb: poster.rgb[..half].to_vec(),
        };
        let bottom = RgbFrame {
            width: 854,
            height: 480,
            rgb: poster.rgb[half..].to_vec(),
        };
        assert!(bright_pixels(&top, 0, 854) > 5_000);
        assert!(bright_pixels(&bottom, 0, 854) > 5_000);
        let empty = render_poster(&[], &opts);
        assert_eq!((empty.width, empty.height), (854, 480));
    }
}
