/// How adapter-side tensor names (without `base_model.model.`) become base
/// checkpoint names: remove a leading prefix, then add another.
///
/// An adapter trained on the same class of model as the base maps one to one.
/// One trained on a differently wrapped model (e.g. `LlamaModel` instead of
/// `LlamaForCausalLM`, whose keys lack the `model.` the base has) needs a
/// prefix added or removed; `resolve` finds the smallest such change under
/// which every adapter name has a base tensor.
public struct LoRAKeyMapping: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// Removed from the front of every adapter name (ends with "." unless empty).
    public let removedPrefix: String
    /// Put in front after removing (ends with "." unless empty).
    public let addedPrefix: String

    public static let identity = LoRAKeyMapping(removedPrefix: "", addedPrefix: "")

    public init(removedPrefix: String, addedPrefix: String) {
        self.removedPrefix = removedPrefix
        self.addedPrefix = addedPrefix
    }

    public var isIdentity: Bool { removedPrefix.isEmpty && addedPrefix.isEmpty }

    /// The base name for an adapter-side name, or nil when the name does not
    /// start with `removedPrefix`.
    public func baseName(for adapterName: String) -> String? {
        guard adapterName.hasPrefix(removedPrefix) else { return nil }
        return addedPrefix + adapterName.dropFirst(removedPrefix.count)
    }

    public var description: String {
        switch (removedPrefix.isEmpty, addedPrefix.isEmpty) {
        case (true, true): return "identity (base_model.model. removed)"
        case (true, false): return "prefix '\(addedPrefix)' added"
        case (false, true): return "prefix '\(removedPrefix)' removed"
        case (false, false): return "prefix '\(removedPrefix)' replaced by '\(addedPrefix)'"
        }
    }

    /// How many name components the mapping changes; smaller is preferred.
    var cost: Int { Self.componentCount(removedPrefix) + Self.componentCount(addedPrefix) }

    /// The mapping under which the most adapter names find a base tensor:
    /// the identity when it maps them all, otherwise the cheapest prefix
    /// change that maps all of them, otherwise the one that maps the most
    /// (so that the error lists the fewest misses).
    ///
    /// Candidates come from lining an adapter name up with every base name
    /// that ends with one of its component-wise suffixes.
    public static func resolve(adapterNames: [String], baseNames: Set<String>) -> LoRAKeyMapping {
        // A name without the removed prefix stays as it is, as the merge
        // plan looks it up (`PlanBuilder.base(for:)`).
        func matched(_ mapping: LoRAKeyMapping) -> Int {
            adapterNames.reduce(0) { count, name in
                count + (baseNames.contains(mapping.baseName(for: name) ?? name) ? 1 : 0)
            }
        }
        if adapterNames.isEmpty || matched(.identity) == adapterNames.count { return .identity }

        var candidates = Set<LoRAKeyMapping>()
        // One unmatched name is enough to propose every mapping that could fix
        // it; a few more cover adapters whose first names are the odd ones out.
        let unmatched = adapterNames.filter { !baseNames.contains($0) }
        for name in unmatched.prefix(4) {
            let components = name.split(separator: ".", omittingEmptySubsequences: false)
            // A suffix of one component ("weight") would line the name up with
            // every base tensor; two or more already single out a module.
            for split in 0..<max(1, components.count - 1) {
                let suffix = components[split...].joined(separator: ".")
                let removed = split == 0 ? "" : components[..<split].joined(separator: ".") + "."
                for base in baseNames where base == suffix || base.hasSuffix("." + suffix) {
                    candidates.insert(LoRAKeyMapping(removedPrefix: removed, addedPrefix: String(base.dropLast(suffix.count))))
                }
            }
        }
        var best = LoRAKeyMapping.identity
        var bestCount = matched(.identity)
        for candidate in candidates.sorted(by: Self.preferred) {
            let count = matched(candidate)
            if count > bestCount { best = candidate; bestCount = count }
        }
        return best
    }

    /// Cheaper first, then by text, so the choice does not depend on set order.
    private static func preferred(_ a: LoRAKeyMapping, _ b: LoRAKeyMapping) -> Bool {
        if a.cost != b.cost { return a.cost < b.cost }
        if a.removedPrefix != b.removedPrefix { return a.removedPrefix < b.removedPrefix }
        return a.addedPrefix < b.addedPrefix
    }

    private static func componentCount(_ prefix: String) -> Int {
        prefix.isEmpty ? 0 : prefix.split(separator: ".", omittingEmptySubsequences: false).count - 1
    }
}
