//! The tools as `tools/list` shows them (names, descriptions, input and
//! output schemas, annotations), snapshot-tested: any change to what agents
//! see is a visible diff in review. `cargo insta review` accepts a change.

use mailroom_mcp::ToolSelection;

#[test]
fn tool_definitions_are_stable() {
    let tools = ToolSelection::all().tools();
    let listed = serde_json::to_value(&tools).expect("tools serialize");
    insta::assert_json_snapshot!("tools", listed);
}

#[test]
fn tool_descriptions_stay_short() {
    // Agents pay for every token of tools/list.
    let tools = ToolSelection::all().tools();
    let total: usize = tools
        .iter()
        .map(|t| serde_json::to_string(t).map(|s| s.len()).unwrap_or(0))
        .sum();
    for tool in &tools {
        let description = tool.description.as_deref().unwrap_or_default();
        assert!(
            !description.is_empty() && description.len() <= 200,
            "{}: {} characters",
            tool.name,
            description.len()
        );
    }
    assert!(total < 16_000, "tools/list is {total} bytes");
}
