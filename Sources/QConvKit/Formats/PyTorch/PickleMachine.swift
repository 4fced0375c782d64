/// Interprets a pickle (`data.pkl`, which `torch.save` writes with protocol
/// 2) without running anything: a small machine over the opcodes state
/// dicts use, which builds every value itself. A `GLOBAL` is only ever
/// matched against the names torch's `weights_only=True` loader allows for a
/// state dict of tensors (`TorchGlobal`); any other name is refused before
/// anything is built from it.
///
/// Bounded: the pickle is at most `maximumLength` bytes, `MARK`s nest at
/// most `maximumMarkDepth` deep, and containers live in an arena, so no
/// pickle costs more than a fixed multiple of its size, or any stack.
struct PickleMachine {
    /// Bytes of the largest pickle read (real state dicts take about 150 bytes a tensor).
    static let maximumLength = 100_000_000
    /// Real state dicts nest `MARK`s three deep.
    static let maximumMarkDepth = 64

    let bytes: [UInt8]
    /// The checkpoint, for messages.
    let file: String
    private(set) var objects: [PickleObject] = []
    private var position = 0
    /// Where the instruction being run starts.
    private(set) var start = 0
    private var stack: [PickleValue] = []
    /// Stack heights at each open `MARK`.
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    /// Runs to `STOP` and returns the value it leaves.
    mutating func run() throws -> PickleValue {
        while true {
            start = position
            let opcode = try byte()
            if opcode == UInt8(ascii: ".") { return try pop() }
            if try pushConstant(opcode) || (try manipulate(opcode)) || (try build(opcode)) { continue }
            throw TorchCheckpointError.unsupportedOpcode(file: file, opcode: opcode, position: start)
        }
    }

    // MARK: - Instructions

    /// Instructions that push a value read from the pickle.
    private mutating func pushConstant(_ opcode: UInt8) throws -> Bool {
        switch opcode {
        case 0x4E: stack.append(.none)                               // NONE
        case 0x88: stack.append(.bool(true))                         // NEWTRUE
        case 0x89: stack.append(.bool(false))                        // NEWFALSE
        case 0x4A: stack.append(.int(Int(Int32(bitPattern: UInt32(try integer(4))))))  // BININT
        case 0x4B: stack.append(.int(Int(try integer(1))))           // BININT1
        case 0x4D: stack.append(.int(Int(try integer(2))))           // BININT2
        case 0x8A: stack.append(.int(try long(count: Int(try integer(1)))))  // LONG1
        case 0x47: stack.append(.float(Double(bitPattern: try integer(8).byteSwapped)))  // BINFLOAT (big-endian)
        case 0x58: stack.append(.string(try text(count: try integer(4))))  // BINUNICODE
        case 0x8C: stack.append(.string(try text(count: try integer(1))))  // SHORT_BINUNICODE
        case 0x8D: stack.append(.string(try text(count: try integer(8))))  // BINUNICODE8
        case 0x55, 0x43: stack.append(.bytes(Array(try read(try integer(1)))))  // SHORT_BINSTRING, SHORT_BINBYTES
        case 0x54, 0x42: stack.append(.bytes(Array(try read(try integer(4)))))  // BINSTRING, BINBYTES
        case 0x29: stack.append(make(.tuple([])))                    // EMPTY_TUPLE
        case 0x5D: stack.append(make(.list([])))                     // EMPTY_LIST
        case 0x7D: stack.append(make(.dict([])))                     // EMPTY_DICT
        case 0x63:                                                   // GLOBAL
            let module = try line(), name = try line()
            stack.append(.global(try resolve(module: module, name: name)))
        default: return false
        }
        return true
    }

    /// Instructions that move values between the stack, marks and memo.
    private mutating func manipulate(_ opcode: UInt8) throws -> Bool {
        switch opcode {
        case 0x80: _ = try read(1)                                   // PROTO
        case 0x95: _ = try read(8)                                   // FRAME
        case 0x28:                                                   // MARK
            guard marks.count < Self.maximumMarkDepth else {
                throw TorchCheckpointError.pickleTooDeep(file: file, position: start, limit: Self.maximumMarkDepth)
            }
            marks.append(stack.count)
        case 0x30: _ = try pop()                                     // POP
        case 0x31: _ = try popMark()                                 // POP_MARK
        case 0x32: stack.append(try top())                           // DUP
        case 0x71: memo[Int(try integer(1))] = try top()             // BINPUT
        case 0x72: memo[Int(try integer(4))] = try top()             // LONG_BINPUT
        case 0x94: memo[memo.count] = try top()                      // MEMOIZE
        case 0x68, 0x6A:                                             // BINGET, LONG_BINGET
            let index = Int(try integer(opcode == 0x68 ? 1 : 4))
            guard let value = memo[index] else { throw TorchCheckpointError.memoMissing(file: file, position: start, index: index) }
            stack.append(value)
        default: return false
        }
        return true
    }

    /// Instructions that build tuples, fill containers and call rebuild functions.
    private mutating func build(_ opcode: UInt8) throws -> Bool {
        switch opcode {
        case 0x74: stack.append(make(.tuple(try popMark())))          // TUPLE
        case 0x85, 0x86, 0x87:                                       // TUPLE1, TUPLE2, TUPLE3
            let count = Int(opcode - 0x84)
            guard stack.count - (marks.last ?? 0) >= count else { throw underflow() }
            let items = Array(stack.suffix(count))
            stack.removeLast(count)
            stack.append(make(.tuple(items)))
        case 0x73:                                                   // SETITEM
            let value = try pop(), key = try pop()
            try insert([key, value], opcode: "SETITEM")
        case 0x75: try insert(try popMark(), opcode: "SETITEMS")      // SETITEMS
        case 0x61: try append([try pop()])                           // APPEND
        case 0x65: try append(try popMark())                         // APPENDS
        case 0x51: stack.append(.storage(try storage(try pop())))     // BINPERSID
        case 0x93:                                                   // STACK_GLOBAL
            let name = try pop(), module = try pop()
            guard case .string(let n) = name, case .string(let m) = module else { throw wrong("STACK_GLOBAL", expected: "two strings", name) }
            stack.append(.global(try resolve(module: m, name: n)))
        case 0x52:                                                   // REDUCE
            let arguments = try pop(), callee = try pop()
            guard case .global(let function) = callee else { throw wrong("REDUCE", expected: "a torch function", callee) }
            stack.append(try call(function, with: try tupleItems(arguments, for: "REDUCE")))
        case 0x62:                                                   // BUILD
            // An OrderedDict's attributes (a state dict's `_metadata`) or a
            // Parameter's: neither changes the tensors, so the state is dropped.
            _ = try pop()
            let target = try top()
            switch target {
            case .tensor: break
            case .object(let index):
                guard case .dict = objects[index] else { throw wrong("BUILD", expected: "a dict or a tensor", target) }
            default: throw wrong("BUILD", expected: "a dict or a tensor", target)
            }
        default: return false
        }
        return true
    }

    // MARK: - Containers

    mutating func make(_ object: PickleObject) -> PickleValue {
        objects.append(object)
        return .object(objects.count - 1)
    }

    private mutating func insert(_ items: [PickleValue], opcode: String) throws {
        let target = try top()
        guard case .object(let index) = target, case .dict(var entries) = objects[index] else { throw wrong(opcode, expected: "a dict", target) }
        guard items.count % 2 == 0 else { throw wrong(opcode, expected: "key and value pairs", target) }
        objects[index] = .list([])  // the arena lets go of the entries, so appending does not copy them
        for i in stride(from: 0, to: items.count, by: 2) { entries.append((items[i], items[i + 1])) }
        objects[index] = .dict(entries)
    }

    private mutating func append(_ items: [PickleValue]) throws {
        let target = try top()
        guard case .object(let index) = target, case .list(var list) = objects[index] else { throw wrong("APPEND", expected: "a list", target) }
        objects[index] = .tuple([])
        list += items
        objects[index] = .list(list)
    }

    /// The items of a tuple value.
    func tupleItems(_ value: PickleValue, for opcode: String) throws -> [PickleValue] {
        guard case .object(let index) = value, case .tuple(let items) = objects[index] else { throw wrong(opcode, expected: "a tuple", value) }
        return items
    }

    // MARK: - Stack

    private mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let value = stack.popLast() else { throw underflow() }
        return value
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let value = stack.last else { throw underflow() }
        return value
    }

    private mutating func popMark() throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw TorchCheckpointError.markMissing(file: file, position: start) }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private func underflow() -> TorchCheckpointError {
        TorchCheckpointError.stackUnderflow(file: file, position: start, opcode: bytes[start])
    }

    func wrong(_ opcode: String, expected: String, _ found: PickleValue) -> TorchCheckpointError {
        TorchCheckpointError.wrongOperand(file: file, position: start, opcode: opcode, expected: expected, found: found.kindDescription(in: objects))
    }

    // MARK: - Reading

    private mutating func read(_ count: UInt64) throws -> ArraySlice<UInt8> {
        guard count <= UInt64(bytes.count - position) else { throw TorchCheckpointError.pickleTruncated(file: file, position: start) }
        defer { position += Int(count) }
        return bytes[position..<(position + Int(count))]
    }

    private mutating func byte() throws -> UInt8 { try read(1).first! }

    /// A little-endian unsigned integer of `count` bytes.
    private mutating func integer(_ count: Int) throws -> UInt64 {
        try read(UInt64(count)).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// A two's complement little-endian integer of `count` bytes (LONG1), at most 8.
    private mutating func long(count: Int) throws -> Int {
        guard count <= 8 else { throw TorchCheckpointError.integerTooLarge(file: file, position: start, bytes: count) }
        guard count > 0 else { return 0 }
        let raw = try integer(count)
        let shift = UInt64(64 - 8 * count)
        return Int(bitPattern: UInt(raw << shift)) >> shift
    }

    private mutating func text(count: UInt64) throws -> String {
        let raw = try read(count)
        guard let string = String(validating: raw, as: UTF8.self) else { throw TorchCheckpointError.invalidText(file: file, position: start) }
        return string
    }

    /// A line of a `GLOBAL` (a module or a name): at most 256 bytes before its newline.
    private mutating func line() throws -> String {
        let end = bytes[position...].prefix(257).firstIndex(of: 0x0A)
        guard let end else { throw TorchCheckpointError.pickleTruncated(file: file, position: start) }
        let text = try self.text(count: UInt64(end - position))
        position += 1
        return text
    }

    private func resolve(module: String, name: String) throws -> TorchGlobal {
        switch TorchGlobal.classify(module: module, name: name) {
        case .allowed(let global): return global
        case .notRead(let what):
            throw TorchCheckpointError.globalNotRead(file: file, global: TorchGlobal.displayName(module: module, name: name), what: what)
        case .refused:
            throw TorchCheckpointError.globalRefused(file: file, global: TorchGlobal.displayName(module: module, name: name))
        }
    }
}
