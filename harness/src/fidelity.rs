//! Teacher against student, example by example: the paired bootstrap interval of the metric
//! difference, McNemar's exact test, top-1 agreement, KL(teacher || student), the
//! teacher-by-student prediction table, the first disagreements with their text, and each
//! model's calibration.

use reports::stats::{
    brier_score, expected_calibration_error, kl_divergence, mcnemar_exact, paired_bootstrap_each,
};
use reports::{Calibration, Comparison, Disagreement};
use tasks::{Gold, Prediction, TaskKind};

use crate::cells::CellFile;
use crate::plan::PlannedTask;

/// Bootstrap resamples (criterion uses 100,000 for its own statistics; 1,000 keeps a run fast
/// and the 95% interval stable to about a tenth of a point).
pub const RESAMPLES: usize = 1000;
/// Fixed so reports are reproducible.
pub const SEED: u64 = 42;
/// Disagreements listed in the results.
pub const SHOW_DISAGREEMENTS: usize = 5;

fn label_of(p: &Prediction) -> Option<usize> {
    match p {
        Prediction::Class { label, .. } => Some(*label),
        Prediction::Score { .. } => None,
    }
}

fn probs_of(p: &Prediction) -> Option<&[f64]> {
    match p {
        Prediction::Class { probs, .. } => Some(probs),
        Prediction::Score { .. } => None,
    }
}

/// Compare two finished cells of one task on the split that carries the primary metric.
pub fn compare_cells(pt: &PlannedTask, teacher: &CellFile, student: &CellFile) -> Comparison {
    let task = pt.task;
    let primary = task.primary_metric();
    let si = task
        .eval_splits()
        .iter()
        .position(|s| !s.suffix.is_empty() && primary.ends_with(s.suffix))
        .unwrap_or(0);
    let (split, ds) = &pt.splits[si];
    let (tp, sp) = (&teacher.predictions[si], &student.predictions[si]);
    let gold: Vec<Gold> = ds.examples.iter().map(|e| e.gold).collect();
    let n = gold.len();

    let intervals = paired_bootstrap_each(n, RESAMPLES, 0.95, SEED, |idx| {
        let g: Vec<Gold> = idx.iter().map(|&i| gold[i]).collect();
        let score = |preds: &Vec<Prediction>| {
            let p: Vec<Prediction> = idx.iter().map(|&i| preds[i].clone()).collect();
            task.score(&p, &g, split.suffix)
                .get(primary)
                .copied()
                .unwrap_or(f64::NAN)
        };
        (score(tp), score(sp))
    });

    let mut cmp = Comparison {
        primary_diff: intervals.diff,
        teacher_interval: Some(intervals.teacher),
        student_interval: Some(intervals.student),
        teacher_only_correct: None,
        student_only_correct: None,
        mcnemar_p: None,
        top1_agreement: None,
        mean_kl: None,
        confusion: None,
        disagreements: Vec::new(),
        teacher_calibration: None,
        student_calibration: None,
    };
    if task.kind() != TaskKind::Classification {
        return cmp;
    }
    let labels = task.labels();
    let k = labels.len();
    let name = |i: usize| labels.get(i).map_or(i.to_string(), |s| s.to_string());
    let (mut b, mut c, mut agree, mut kl) = (0u64, 0u64, 0usize, 0.0);
    let mut confusion = vec![vec![0u64; k]; k];
    for i in 0..n {
        let (Some(lt), Some(ls), Some(g)) = (label_of(&tp[i]), label_of(&sp[i]), gold[i].class())
        else {
            continue;
        };
        match (lt == g, ls == g) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
        if lt == ls {
            agree += 1;
        } else if cmp.disagreements.len() < SHOW_DISAGREEMENTS {
            let ex = &ds.examples[i];
            cmp.disagreements.push(Disagreement {
                id: ex.id.clone(),
                text_a: ex.text_a.clone(),
                text_b: ex.text_b.clone(),
                gold: name(g),
                teacher: name(lt),
                student: name(ls),
            });
        }
        if lt < k && ls < k {
            confusion[lt][ls] += 1;
        }
        if let (Some(p), Some(q)) = (probs_of(&tp[i]), probs_of(&sp[i])) {
            kl += kl_divergence(p, q);
        }
    }
    let calibration = |preds: &Vec<Prediction>| {
        let probs: Vec<Vec<f64>> = preds
            .iter()
            .filter_map(|p| probs_of(p).map(<[f64]>::to_vec))
            .collect();
        let g: Vec<usize> = gold.iter().filter_map(Gold::class).collect();
        if probs.len() != g.len() {
            return None;
        }
        let conf: Vec<f64> = probs
            .iter()
            .map(|p| p.iter().cloned().fold(0.0, f64::max))
            .collect();
        let ok: Vec<bool> = preds
            .iter()
            .zip(&g)
            .map(|(p, &gl)| label_of(p) == Some(gl))
            .collect();
        Some(Calibration {
            ece: expected_calibration_error(&conf, &ok, 15),
            brier: brier_score(&probs, &g),
        })
    };
    cmp.teacher_only_correct = Some(b);
    cmp.student_only_correct = Some(c);
    cmp.mcnemar_p = Some(mcnemar_exact(b, c));
    cmp.top1_agreement = Some(agree as f64 / n as f64);
    cmp.mean_kl = Some(kl / n as f64);
    cmp.confusion = Some(confusion);
    cmp.teacher_calibration = calibration(tp);
    cmp.student_calibration = calibration(sp);
    cmp
}
