/// What a command looks like on the command line, for parsing and for `--help`.
public struct CommandSpec: Sendable {
    public let name: String
    public let abstract: String
    /// Positional arguments in order: name and help.
    public let positionals: [(name: String, help: String)]
    /// How many trailing positionals may be left out.
    public let optionalPositionals: Int
    /// The index of a positional that may be given several times in a row
    /// ("ADAPTER [ADAPTER...]"); the command sorts the arguments out.
    public let repeatedPositional: Int?
    public let options: [OptionSpec]
    public let discussion: String?
    /// Real command lines that show the command at work, ending the help.
    public let examples: [String]
    /// The command as its usage line names it ("qconv to-nf4").
    public let program: String

    public init(program: String = "qconv", name: String, abstract: String, positionals: [(name: String, help: String)] = [],
                optionalPositionals: Int = 0, repeatedPositional: Int? = nil, options: [OptionSpec], discussion: String? = nil,
                examples: [String] = []) {
        self.program = program
        self.name = name
        self.abstract = abstract
        self.positionals = positionals
        self.optionalPositionals = optionalPositionals
        self.repeatedPositional = repeatedPositional
        self.options = options
        self.discussion = discussion
        self.examples = examples
    }

    public var usage: String {
        var parts = [program, name].filter { !$0.isEmpty }
        for (i, positional) in positionals.enumerated() {
            parts.append(i >= positionals.count - optionalPositionals ? "[\(positional.name)]" : positional.name)
            if i == repeatedPositional { parts.append("[\(positional.name)...]") }
        }
        parts.append("[options]")
        return parts.joined(separator: " ")
    }

    public var help: String {
        var lines = ["\(abstract)", "", "usage: \(usage)", ""]
        if !positionals.isEmpty {
            lines.append("arguments:")
            for positional in positionals { lines.append(Self.row(positional.name, positional.help)) }
            lines.append("")
        }
        lines.append("options:")
        for option in options + [Flag("--help", "Show this help.").spec] {
            let left = option.valueName.map { "\(option.name) \($0)" } ?? option.name
            lines.append(Self.row(left, option.help + (option.repeatable ? " (repeatable)" : "")))
        }
        if let discussion { lines += ["", discussion] }
        if !examples.isEmpty { lines += ["", "examples:"] + examples.map { "  " + $0 } }
        return lines.joined(separator: "\n")
    }

    private static func row(_ left: String, _ right: String) -> String {
        "  " + left + String(repeating: " ", count: max(1, 26 - left.count)) + right
    }
}

/// One command's arguments, parsed once against its spec: positionals in
/// order and the options given. Options are read back through the same
/// `Flag` and `Option` values the spec was made of; reading one the command
/// does not declare is a programming error, and stops the program.
public struct ParsedArguments: Sendable {
    public let spec: CommandSpec
    public private(set) var positionals: [String] = []
    private var given: [String: [String]] = [:]

    init(spec: CommandSpec) { self.spec = spec }

    private func declared(_ option: OptionSpec) -> OptionSpec {
        precondition(spec.options.contains(option), "'\(spec.name)' reads \(option.name), which its spec does not declare")
        return option
    }

    /// Whether the flag was given.
    public subscript(flag: Flag) -> Bool { given[declared(flag.spec).name] != nil }

    /// The option's value (its last, for a repeatable one), or nil when absent.
    public func value<Value>(_ option: Option<Value>) throws -> Value? {
        try values(option).last
    }

    /// Every value given for the option, in order.
    public func values<Value>(_ option: Option<Value>) throws -> [Value] {
        try (given[declared(option.spec).name] ?? []).map { text in
            guard let value = option.read(text) else {
                throw usageError("\(option.spec.name) expects \(option.expected), got '\(text)'")
            }
            return value
        }
    }

    /// Whether the option (a flag or one with a value) was given at all.
    public func isGiven(_ option: OptionSpec) -> Bool { given[declared(option).name] != nil }

    /// A usage error that points at the command's help.
    public func usageError(_ message: String) -> UsageError {
        UsageError("\(message)\nsee '\([spec.program, spec.name].filter { !$0.isEmpty }.joined(separator: " ")) --help'")
    }

    /// Parses `arguments`; `--name value`, `--name=value` and `--` are understood.
    public static func parse(_ arguments: [String], spec: CommandSpec) throws -> ParsedArguments {
        var parsed = ParsedArguments(spec: spec)
        var index = 0
        var onlyPositionals = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if onlyPositionals || !argument.hasPrefix("-") || argument == "-" {
                parsed.positionals.append(argument)
                continue
            }
            if argument == "--" { onlyPositionals = true; continue }
            var name = argument
            var inlineValue: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            }
            guard let option = spec.options.first(where: { $0.name == name }) else {
                let hint = Suggestions.hint(for: name, among: spec.options.map(\.name))
                throw parsed.usageError("unknown option '\(name)' for '\([spec.program, spec.name].filter { !$0.isEmpty }.joined(separator: " "))'\(hint)")
            }
            if let valueName = option.valueName {
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard index < arguments.count else { throw parsed.usageError("\(name) needs a value (\(valueName))") }
                    value = arguments[index]
                    index += 1
                }
                if !option.repeatable && parsed.given[name] != nil { throw parsed.usageError("\(name) given more than once") }
                parsed.given[name, default: []].append(value)
            } else {
                guard inlineValue == nil else { throw parsed.usageError("\(name) takes no value") }
                parsed.given[name] = [""]
            }
        }
        let required = spec.positionals.count - spec.optionalPositionals
        if parsed.positionals.count < required {
            throw parsed.usageError("missing argument \(spec.positionals[parsed.positionals.count].name)")
        }
        if parsed.positionals.count > spec.positionals.count && spec.repeatedPositional == nil {
            throw parsed.usageError("unexpected argument '\(parsed.positionals[spec.positionals.count])'")
        }
        return parsed
    }
}
