//! The `/proc` parsers fed arbitrary text and text shaped like their files (numbers up to
//! `u64::MAX`, names with parentheses, `kB` lines): they answer or say no, and never panic.
//! The cases are bounded (`PROPTEST_CASES` raises them), so the test command runs them.

use proptest::prelude::*;
use refhunt_procmon::proc_text::{
    parse_children, parse_smaps_rollup, parse_stat, parse_statm, parse_status_swap,
};

/// Words of the files these parsers read, and their edges.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..5000).prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        prop::sample::select(vec![
            "(",
            ")",
            "(python3)",
            "(a) (b)",
            ")(",
            "R",
            "S",
            "kB",
            "Pss:",
            "Swap:",
            "VmSwap:",
            "Private_Clean:",
            "Private_Dirty:",
            "",
            "\u{fffd}",
            "\t",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ]
}

/// A file of such words, on lines.
fn shaped() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (word(), prop::sample::select(vec![" ", "  ", "\n", ":", ""])),
        0..48,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(w, s)| [w, s.to_string()])
            .collect()
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![shaped(), any::<String>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn statm_answers_or_says_no(text in text(), page in prop_oneof![Just(4096u64), any::<u64>()]) {
        let _ = parse_statm(&text, page);
    }

    #[test]
    fn stat_answers_or_says_no(text in text()) {
        if let Some(stat) = parse_stat(&text) {
            prop_assert!(text.contains(&stat.comm));
        }
    }

    #[test]
    fn status_and_smaps_answer_or_say_no(text in text()) {
        let _ = parse_status_swap(&text);
        let _ = parse_smaps_rollup(&text);
    }

    #[test]
    fn children_are_the_numbers_listed(text in text()) {
        let words = text.split_ascii_whitespace().count();
        prop_assert!(parse_children(&text).count() <= words);
    }
}
