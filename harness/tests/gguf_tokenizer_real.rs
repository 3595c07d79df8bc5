//! The tokenizer rebuilt from SmolLM2's GGUF metadata against `tokenizer.json` in
//! `../shared/models/SmolLM2-135M-Instruct-Q4_1`, which was built the same way by llama.cpp's
//! rules and is the reference (issue 5). The GGUF file is not in the repository: fetch it with
//! `scripts/fetch-smollm2.sh`, then run this test with `cargo test -- --ignored`.

use std::path::PathBuf;

#[test]
#[ignore = "needs the SmolLM2 GGUF file: scripts/fetch-smollm2.sh, then cargo test -- --ignored"]
fn smollm2_tokenizer_from_gguf_metadata_matches_the_shared_tokenizer_json() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let gguf =
        root.join("target/models/SmolLM2-135M-Instruct-Q4_1/SmolLM2-135M-Instruct.Q4_1.gguf");
    let reference = root.join("../shared/models/SmolLM2-135M-Instruct-Q4_1/tokenizer.json");
    assert!(
        gguf.exists() && reference.exists(),
        "{} or {} is absent (run scripts/fetch-smollm2.sh)",
        gguf.display(),
        reference.display()
    );
    let ours = harness::models::gguf_tokenizer::from_gguf(&gguf).unwrap();
    let theirs = tokenizers::Tokenizer::from_file(&reference).unwrap();
    assert_eq!(ours.get_vocab(true), theirs.get_vocab(true));
    let wiki = root.join("../shared/data/wikitext-2/wiki.test.raw");
    let text = std::fs::read_to_string(wiki).unwrap();
    let mut cut = 200_000.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let sample = format!("{} 12345 <|im_start|>user\nHi<|im_end|>", &text[..cut]);
    let a = ours.encode(sample.as_str(), true).unwrap();
    let b = theirs.encode(sample.as_str(), true).unwrap();
    assert_eq!(a.get_ids(), b.get_ids());
    assert!(a.len() > 40_000);
    assert_eq!(
        ours.decode(&a.get_ids()[..200], false).unwrap(),
        theirs.decode(&b.get_ids()[..200], false).unwrap()
    );
}
