import QConvKit

/// One `--option` a command accepts.
struct OptionSpec {
    /// The long name with its dashes, e.g. "--block-size".
    let name: String
    /// The placeholder for the value ("N"), or nil for a flag.
    let valueName: String?
    let help: String
    var repeatable = false

    static func flag(_ name: String, _ help: String) -> OptionSpec {
        OptionSpec(name: name, valueName: nil, help: help)
    }

    static func value(_ name: String, _ valueName: String, _ help: String, repeatable: Bool = false) -> OptionSpec {
        OptionSpec(name: name, valueName: valueName, help: help, repeatable: repeatable)
    }
}

/// What a subcommand looks like on the command line, for parsing and for `--help`.
struct CommandSpec {
    let name: String
    let abstract: String
    /// Positional arguments in order: name and help.
    let positionals: [(name: String, help: String)]
    /// How many trailing positionals may be left out.
    var optionalPositionals = 0
    let options: [OptionSpec]
    var discussion: String? = nil

    var usage: String {
        var parts = ["qconv", name]
        for (i, positional) in positionals.enumerated() {
            parts.append(i >= positionals.count - optionalPositionals ? "[\(positional.name)]" : positional.name)
        }
        parts.append("[options]")
        return parts.joined(separator: " ")
    }

    var help: String {
        var lines = ["\(abstract)", "", "usage: \(usage)", ""]
        if !positionals.isEmpty {
            lines.append("arguments:")
            for positional in positionals { lines.append(Self.row(positional.name, positional.help)) }
            lines.append("")
        }
        lines.append("options:")
        for option in options + [.flag("--help", "Show this help.")] {
            let left = option.valueName.map { "\(option.name) \($0)" } ?? option.name
            lines.append(Self.row(left, option.help + (option.repeatable ? " (repeatable)" : "")))
        }
        if let discussion { lines += ["", discussion] }
        return lines.joined(separator: "\n")
    }

    private static func row(_ left: String, _ right: String) -> String {
        let pad = max(1, 26 - left.count)
        return "  " + left + String(repeating: " ", count: pad) + right
    }
}

/// The result of parsing one subcommand's arguments against its spec.
struct ParsedArguments {
    let command: String
    var positionals: [String] = []
    private var values: [String: [String]] = [:]

    init(command: String) { self.command = command }

    func flag(_ name: String) -> Bool { values[name] != nil }
    func value(_ name: String) -> String? { values[name]?.last }
    func values(_ name: String) -> [String] { values[name] ?? [] }

    /// An integer option within `range`, or nil when absent.
    func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = value(name) else { return nil }
        guard let number = Int(text), range.contains(number) else {
            throw usageError("\(name) expects an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return number
    }

    /// A finite number option, or nil when absent.
    func number(_ name: String) throws -> Double? {
        guard let text = value(name) else { return nil }
        guard let number = Double(text), number.isFinite else { throw usageError("\(name) expects a number, got '\(text)'") }
        return number
    }

    /// `--threads N` or every core.
    func threads() throws -> Int {
        try integer("--threads", in: 1...1024) ?? defaultThreadCount
    }

    func usageError(_ message: String) -> UsageError {
        UsageError("\(message)\nsee 'qconv \(command) --help'")
    }

    /// Parses `arguments`; `--name value`, `--name=value` and `--` are understood.
    static func parse(_ arguments: [String], spec: CommandSpec) throws -> ParsedArguments {
        var parsed = ParsedArguments(command: spec.name)
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
                throw parsed.usageError("unknown option '\(name)' for 'qconv \(spec.name)'")
            }
            if option.valueName != nil {
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard index < arguments.count else { throw parsed.usageError("\(name) needs a value (\(option.valueName!))") }
                    value = arguments[index]
                    index += 1
                }
                if !option.repeatable && parsed.values[name] != nil {
                    throw parsed.usageError("\(name) given more than once")
                }
                parsed.values[name, default: []].append(value)
            } else {
                guard inlineValue == nil else { throw parsed.usageError("\(name) takes no value") }
                parsed.values[name] = [""]
            }
        }
        let required = spec.positionals.count - spec.optionalPositionals
        if parsed.positionals.count < required {
            let missing = spec.positionals[parsed.positionals.count].name
            throw parsed.usageError("missing argument \(missing)")
        }
        if parsed.positionals.count > spec.positionals.count {
            throw parsed.usageError("unexpected argument '\(parsed.positionals[spec.positionals.count])'")
        }
        return parsed
    }
}
