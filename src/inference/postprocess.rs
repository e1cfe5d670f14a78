//! What a remote model's raw outputs need before they are detections in frame pixels: the
//! boxes/scores/classes/num_detections convention assembled into detections, coordinates scaled
//! from the model's input size back to the frame, and non-maximum suppression for models that do
//! not do their own.

use super::Detection;

/// How the `boxes` tensor lays out a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BoxLayout {
    /// `[y1, x1, y2, x2]` (TensorFlow's detection API) instead of `[x1, y1, x2, y2]`.
    pub yxyx: bool,
    /// Coordinates are fractions of the input size (0–1) rather than input pixels.
    pub normalized: bool,
}

/// The four tensors of the boxes convention for `n` frames of at most `k` detections each:
/// `boxes` `[n, k, 4]`, `scores` `[n, k]`, `classes` `[n, k]` (class indices), and optionally
/// `num_detections` `[n]` (how many of the `k` rows are real; all when absent).
pub struct BoxTensors<'a> {
    pub boxes: &'a [f32],
    pub scores: &'a [f32],
    pub classes: &'a [f32],
    pub num_detections: Option<&'a [f32]>,
}

/// Detections per frame, in the model's input pixels (`input` = width, height), from the boxes
/// convention; rows scoring below `threshold`, with a negative class, or not finite are dropped.
pub fn from_boxes(
    t: &BoxTensors<'_>,
    n: usize,
    k: usize,
    layout: BoxLayout,
    input: (u32, u32),
    threshold: f32,
    label: impl Fn(usize) -> String,
) -> Result<Vec<Vec<Detection>>, String> {
    if t.boxes.len() != n * k * 4 || t.scores.len() != n * k || t.classes.len() != n * k {
        return Err(format!(
            "boxes/scores/classes hold {}/{}/{} values, expected {}/{}/{} for {n} frames of {k}",
            t.boxes.len(),
            t.scores.len(),
            t.classes.len(),
            n * k * 4,
            n * k,
            n * k
        ));
    }
    if let Some(num) = t.num_detections
        && num.len() != n
    {
        return Err(format!(
            "num_detections holds {} values for {n} frames",
            num.len()
        ));
    }
    let (sx, sy) = if layout.normalized {
        (input.0 as f32, input.1 as f32)
    } else {
        (1.0, 1.0)
    };
    Ok((0..n)
        .map(|f| {
            let real = t
                .num_detections
                .map(|num| (num[f].max(0.0) as usize).min(k))
                .unwrap_or(k);
            (0..real)
                .filter_map(|j| {
                    let i = f * k + j;
                    let b = &t.boxes[i * 4..i * 4 + 4];
                    let [x1, y1, x2, y2] = if layout.yxyx {
                        [b[1], b[0], b[3], b[2]]
                    } else {
                        [b[0], b[1], b[2], b[3]]
                    };
                    let (score, class) = (t.scores[i], t.classes[i]);
                    let finite = [x1, y1, x2, y2, score, class].iter().all(|v| v.is_finite());
                    (finite && class >= 0.0 && score >= threshold).then(|| Detection {
                        label: label(class as usize),
                        confidence: score,
                        bbox: [x1 * sx, y1 * sy, x2 * sx, y2 * sy],
                    })
                })
                .collect()
        })
        .collect())
}

/// Scales a detection's box from the model's input size to the frame's.
pub fn to_frame(mut d: Detection, input: (u32, u32), frame: (u32, u32)) -> Detection {
    if input != frame {
        d.bbox = crate::media::jpeg::scale_box(d.bbox, input, frame);
    }
    d
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression per class: the highest-scoring box of a class suppresses the
/// others of that class overlapping it by more than `threshold` IoU. Order: by score, descending.
pub fn nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        let suppressed = kept
            .iter()
            .any(|k| k.label == d.label && iou(&k.bbox, &d.bbox) > threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, confidence: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            label: label.into(),
            confidence,
            bbox,
        }
    }

    /// Ensures NMS keeps the best of overlapping boxes of one class, keeps overlapping boxes of
    /// different classes and separate boxes of the same class.
    #[test]
    fn nms_suppresses_overlaps_within_a_class() {
        let dets = vec![
            det("car", 0.6, [12.0, 10.0, 52.0, 50.0]),
            det("car", 0.9, [10.0, 10.0, 50.0, 50.0]),
            det("person", 0.5, [10.0, 10.0, 50.0, 50.0]),
            det("car", 0.4, [200.0, 200.0, 240.0, 240.0]),
        ];
        let kept = nms(dets, 0.5);
        let summary: Vec<(&str, f32)> = kept
            .iter()
            .map(|d| (d.label.as_str(), d.confidence))
            .collect();
        assert_eq!(summary, vec![("car", 0.9), ("person", 0.5), ("car", 0.4)]);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
    }

    /// Ensures the boxes convention is read in both layouts, normalized coordinates become input
    /// pixels, `num_detections` cuts padding, and the threshold applies.
    #[test]
    fn boxes_convention_is_assembled() {
        // 2 frames × 2 rows; frame 1 has one real detection.
        let boxes = [
            0.125, 0.25, 0.5, 0.625, /* */ 0.0, 0.0, 0.125, 0.125, //
            0.25, 0.5, 0.75, 1.0, /* */ 9.0, 9.0, 9.0, 9.0,
        ];
        let t = BoxTensors {
            boxes: &boxes,
            scores: &[0.9, 0.1, 0.8, 0.99],
            classes: &[1.0, 0.0, 2.0, 2.0],
            num_detections: Some(&[2.0, 1.0]),
        };
        let layout = BoxLayout {
            yxyx: true,
            normalized: true,
        };
        let names = ["a", "b", "c"];
        let got = from_boxes(&t, 2, 2, layout, (200, 100), 0.5, |c| names[c].into()).unwrap();
        assert_eq!(got[0], vec![det("b", 0.9, [50.0, 12.5, 125.0, 50.0])]);
        assert_eq!(got[1], vec![det("c", 0.8, [100.0, 25.0, 200.0, 75.0])]);
        let plain = from_boxes(&t, 2, 2, BoxLayout::default(), (200, 100), 0.0, |c| {
            c.to_string()
        })
        .unwrap();
        assert_eq!(plain[0][0].bbox, [0.125, 0.25, 0.5, 0.625]);
        assert_eq!(plain[0].len(), 2);
        assert!(from_boxes(&t, 3, 2, layout, (1, 1), 0.0, |c| c.to_string()).is_err());
        let scaled = to_frame(
            det("x", 1.0, [10.0, 10.0, 20.0, 30.0]),
            (320, 240),
            (640, 480),
        );
        assert_eq!(scaled.bbox, [20.0, 20.0, 40.0, 60.0]);
    }
}
