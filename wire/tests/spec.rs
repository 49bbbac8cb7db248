//! The opcode and error-code tables of `docs/protocol.md` (§4, §7) agree with the code: same
//! numbers, same names, same retriable marks, nothing missing on either side.

use wire::{ErrorCode, Opcode};

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

/// Table rows (cells trimmed) of the section starting at `heading`.
fn table_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading}"));
    doc[start..]
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with('|') && !line.starts_with("|---"))
        .skip(1) // column titles
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

#[test]
fn opcode_table_matches_the_code() {
    let rows = table_rows(&protocol_doc(), "## 4. Operations");
    let documented: Vec<(u16, String)> = rows
        .iter()
        .map(|row| {
            let number = u16::from_str_radix(row[0].trim_start_matches("0x"), 16).expect("hex");
            (number, row[1].clone())
        })
        .collect();
    let code: Vec<(u16, String)> = Opcode::ALL
        .iter()
        .map(|opcode| (opcode.as_u16(), opcode.name().to_string()))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn error_code_table_matches_the_code() {
    let rows = table_rows(&protocol_doc(), "## 7. Error codes");
    let documented: Vec<(u16, String, bool)> = rows
        .iter()
        .map(|row| {
            (
                row[0].parse().expect("number"),
                row[1].clone(),
                row[2] == "yes",
            )
        })
        .collect();
    let code: Vec<(u16, String, bool)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_u16(), code.name().to_string(), code.is_retriable()))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn goaway_reasons_match_the_code() {
    let rows = table_rows(&protocol_doc(), "### 5.2 GOAWAY");
    let reason_cell = rows
        .iter()
        .find(|row| row[2] == "reason")
        .expect("a reason row in §5.2");
    // "1 `SHUTTING_DOWN`, 2 `PROTOCOL_ERROR`, ..." -> [(1, "SHUTTING_DOWN"), ...]
    let documented: Vec<(u16, String)> = reason_cell[3]
        .split(',')
        .map(|item| {
            let (number, name) = item.trim().split_once(' ').expect("number and name");
            (
                number.parse().expect("number"),
                name.trim_matches('`').to_string(),
            )
        })
        .collect();
    let code: Vec<(u16, String)> = wire::msg::GoawayReason::ALL
        .iter()
        .map(|reason| {
            let name = format!("{reason:?}");
            let mut upper = String::new();
            for (index, letter) in name.chars().enumerate() {
                if letter.is_uppercase() && index > 0 {
                    upper.push('_');
                }
                upper.push(letter.to_ascii_uppercase());
            }
            (*reason as u16, upper)
        })
        .collect();
    assert_eq!(documented, code);
}
