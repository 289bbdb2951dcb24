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

#[test]
fn every_tool_states_all_four_hints_and_an_object_output() {
    // Clients assume the worst for a hint left out (destructive, not
    // idempotent, open world): every tool says each one.
    for tool in ToolSelection::all().tools() {
        let hints = tool.annotations.as_ref().expect("annotations");
        assert!(
            hints.read_only_hint.is_some()
                && hints.destructive_hint.is_some()
                && hints.idempotent_hint.is_some()
                && hints.open_world_hint.is_some(),
            "{}: {hints:?}",
            tool.name
        );
        let output = tool.output_schema.as_ref().expect("outputSchema");
        assert_eq!(
            output.get("type"),
            Some(&serde_json::json!("object")),
            "{}",
            tool.name
        );
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&serde_json::json!("object")),
            "{}",
            tool.name
        );
    }
}
