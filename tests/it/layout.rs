//! README's layout table and the source tree name the same things, so the table a newcomer reads first
//! cannot drift from the code.

use std::collections::BTreeSet;

fn table_paths(readme: &str) -> BTreeSet<String> {
    let start = readme.find("## Layout").expect("README has a Layout section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            line.split('|').nth(1).unwrap_or("").split(',').map(|p| p.trim().trim_matches('`').to_string())
        })
        .collect()
}

#[test]
fn the_readme_layout_table_names_every_top_level_module_and_nothing_that_is_gone() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let listed = table_paths(&readme);
    for path in &listed {
        assert!(root.join(path).exists(), "README's layout names `{path}`, which does not exist");
    }
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if entry.file_type().unwrap().is_dir() { format!("src/{name}/") } else { format!("src/{name}") };
        assert!(listed.contains(&path), "README's layout does not name `{path}`");
    }
}
