//! File-name safe spellings of tensor and node names.

/// Replaces characters that cannot appear in a file name (`/`, `\`, `:`, ...) with `_`.
pub fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unsafe_chars_are_replaced() {
        assert_eq!(
            super::file_safe("/enc/conv1/Conv_output_0"),
            "_enc_conv1_Conv_output_0"
        );
        assert_eq!(super::file_safe("a:b"), "a_b");
        assert_eq!(super::file_safe(".."), "_");
    }
}
