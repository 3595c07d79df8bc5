//! Every multiple-choice and cloze data set in `../shared/data` (beside the project root, also
//! present in CI) reads completely: the row counts of `../shared/README.md`, every gold answer
//! inside its choices, and the prompts lm-eval builds.

use std::path::PathBuf;

use tasks::generation::tasks::{LmData, LmSource, LmTask, LoadOptions};

fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

fn load(task: &dyn LmTask, options: LoadOptions) -> tasks::choice::ChoiceSet {
    match task.load(&LmSource::Dir(shared_data()), &options) {
        Ok(LmData::Choices(set)) => set,
        Ok(_) => panic!("{}: not a choice data set", task.name()),
        Err(e) => panic!("{}: {e}", task.name()),
    }
}

#[test]
fn every_shared_benchmark_reads_with_the_published_row_counts() {
    let want: [(&dyn LmTask, usize, usize); 7] = [
        (&tasks::choice::ARC_EASY, 2376, 0),
        (&tasks::choice::ARC_CHALLENGE, 1172, 0),
        (&tasks::choice::PIQA, 1838, 2),
        (&tasks::choice::WINOGRANDE, 1267, 2),
        (&tasks::choice::BOOLQ, 3270, 2),
        (&tasks::choice::LAMBADA_OPENAI, 5153, 1),
        (&tasks::choice::MMLU, 14042, 4),
    ];
    for (task, rows, choices) in want {
        let set = load(task, LoadOptions::default());
        assert_eq!(set.docs.len(), rows, "{}", task.name());
        for d in &set.docs {
            assert!(d.gold < d.choices.len(), "{} {}", task.name(), d.id);
            assert_eq!(d.requests.len(), d.choices.len());
            if choices > 0 {
                assert_eq!(d.choices.len(), choices, "{} {}", task.name(), d.id);
            }
        }
    }
}

#[test]
fn mmlu_has_57_subjects_and_limit_takes_the_first_of_each() {
    let set = load(&tasks::choice::MMLU, LoadOptions::default());
    let subjects: std::collections::BTreeSet<_> =
        set.docs.iter().filter_map(|d| d.group.clone()).collect();
    assert_eq!(subjects.len(), 57);
    let limited = load(
        &tasks::choice::MMLU,
        LoadOptions {
            limit: Some(2),
            num_fewshot: 0,
        },
    );
    assert_eq!(limited.docs.len(), 114);
    assert_eq!(
        limited.docs[0].requests[0].context,
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
         Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n\
         A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    );
    assert_eq!(limited.docs[0].gold, 1);
    // The shared copy has no dev split: few-shot says where it looked.
    let e = tasks::choice::MMLU
        .load(
            &LmSource::Dir(shared_data()),
            &LoadOptions {
                limit: None,
                num_fewshot: 5,
            },
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mmlu/dev"), "{e}");
}

#[test]
fn hellaswag_openbookqa_and_sciq_read_their_release_layouts() {
    // Not in ../shared: small files in each release's layout.
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "hellaswag/hellaswag_val.jsonl",
        r#"{"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY"}"#,
    );
    write(
        "openbookqa/Main/test.jsonl",
        r#"{"id": "8-343", "question": {"stem": "A person wants to start saving money", "choices": [{"text": "make more phone calls", "label": "A"}, {"text": "quit eating lunch out", "label": "B"}]}, "answerKey": "B"}"#,
    );
    write(
        "sciq/test.json",
        r#"[{"question": "What is the process?", "distractor3": "d3", "distractor1": "d1", "distractor2": "d2", "correct_answer": "mitosis", "support": " Cells divide."}]"#,
    );
    let load = |task: &dyn LmTask| match task
        .load(&LmSource::Dir(dir.path().into()), &LoadOptions::default())
        .unwrap()
    {
        LmData::Choices(set) => set,
        _ => panic!("choices"),
    };
    let h = load(&tasks::choice::HELLASWAG);
    assert_eq!(
        h.docs[0].requests[0].context,
        "Roof shingle removal: A man is sitting on a roof. He"
    );
    assert_eq!((h.docs[0].gold, h.docs[0].id.as_str()), (3, "24"));
    let o = load(&tasks::choice::OPENBOOKQA);
    assert_eq!(
        o.docs[0].requests[1].context,
        "A person wants to start saving money"
    );
    assert_eq!(o.docs[0].requests[1].continuation, " quit eating lunch out");
    assert_eq!(o.docs[0].gold, 1);
    let s = load(&tasks::choice::SCIQ);
    assert_eq!(
        s.docs[0].requests[0].context,
        "Cells divide.\nQuestion: What is the process?\nAnswer:"
    );
    assert_eq!(s.docs[0].choices, ["d1", "d2", "d3", "mitosis"]);
    // A missing file says which file and what to pass instead.
    let e = tasks::choice::HELLASWAG
        .load(
            &LmSource::Dir(dir.path().join("nowhere")),
            &LoadOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("hellaswag/hellaswag_val.jsonl: file not found"),
        "{e}"
    );
    assert!(e.contains("Rowan/hellaswag"), "{e}");
}
