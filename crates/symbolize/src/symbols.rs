//! Function symbols with their extents, from an ELF file's symbol table and its dynamic one.
//! An address past a function's end is not in that function: a static interpreter's own
//! functions lie between the few it exports, and taking the nearest export named one of them
//! `PyInit_posix`, which read as "made during the import of posix".

use object::{Object, ObjectSymbol, SymbolKind};

#[derive(Default)]
pub struct Symbols(Vec<(u64, u64, String)>);

impl Symbols {
    /// The function symbols of the ELF files at `paths`, all in one address space.
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> Symbols {
        let mut all = Vec::new();
        for path in paths {
            let Some(data) = crate::mapped::map(path) else {
                continue;
            };
            let Ok(file) = object::File::parse(&*data) else {
                continue;
            };
            all.extend(
                file.symbols()
                    .chain(file.dynamic_symbols())
                    .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0 && s.address() > 0)
                    .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string()))),
            );
        }
        all.sort();
        all.dedup_by_key(|s| s.0);
        Symbols(all)
    }

    /// The function whose extent holds `address`.
    pub fn find(&self, address: u64) -> Option<&str> {
        let i = self.0.partition_point(|s| s.0 <= address).checked_sub(1)?;
        let (start, size, name) = &self.0[i];
        (address < start + size).then_some(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_a_functions_end_has_no_name() {
        let symbols = Symbols(vec![
            (0x1000, 0x10, "a".into()),
            (0x2000, 0x100, "b".into()),
        ]);
        assert_eq!(symbols.find(0x1000), Some("a"));
        assert_eq!(symbols.find(0x100f), Some("a"));
        assert_eq!(symbols.find(0x1010), None);
        assert_eq!(symbols.find(0x20ff), Some("b"));
        assert_eq!(symbols.find(0x0fff), None);
    }

    #[test]
    fn this_test_binarys_own_functions_are_found() {
        let exe = std::env::current_exe().unwrap();
        let symbols = Symbols::of([exe.as_path()]);
        assert!(symbols
            .0
            .iter()
            .any(|s| s.2.contains("an_address_past_a_functions_end")));
    }
}
