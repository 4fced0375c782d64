/// A validated safetensors header: the tensors in data order, with their byte
/// ranges, and the `__metadata__` strings.
public struct SafeTensorsHeader: Sendable {
    /// One tensor of the file: what it is and where its bytes are.
    public struct Entry: Sendable {
        public let info: TensorInfo
        /// Byte range relative to the start of the data section.
        public let dataOffsets: Range<UInt64>

        public var name: String { info.name }
    }

    /// The largest header the reference reader accepts.
    public static let maximumHeaderLength: UInt64 = 100_000_000

    /// Tensors sorted by data offset, which is the order of their bytes.
    public let tensors: [Entry]
    /// `__metadata__` in header order, or nil when the header has none.
    public let metadata: [(key: String, value: String)]?
    /// The `N` of the 8-byte prefix: the JSON's length including padding.
    public let headerLength: UInt64

    /// Where tensor data begins in the file.
    public var dataStart: UInt64 { 8 + headerLength }
    /// Total bytes of tensor data.
    public var dataLength: UInt64 { tensors.last?.dataOffsets.upperBound ?? 0 }

    /// Parses and validates the JSON header of `file` (whose total size is
    /// `fileSize`), applying every rule in `SafeTensorsError` in the reference
    /// reader's order.
    public static func parse(json bytes: [UInt8], headerLength: UInt64, fileSize: UInt64, file: String) throws -> SafeTensorsHeader {
        guard String(validating: bytes, as: UTF8.self) != nil else { throw SafeTensorsError.headerNotUTF8(file: file) }
        let root: JSONValue
        do {
            root = try JSONParser.parse(bytes)
        } catch let error as JSONParseError {
            throw SafeTensorsError.headerNotJSON(file: file, reason: error.description)
        }
        guard let object = root.objectValue else {
            throw SafeTensorsError.headerNotObject(file: file, found: root.kindDescription)
        }

        var seen = Set<String>()
        var metadata: [(key: String, value: String)]?
        var unsorted: [Entry] = []
        unsorted.reserveCapacity(object.members.count)
        for (name, value) in object.members {
            guard seen.insert(name).inserted else { throw SafeTensorsError.duplicateTensorName(file: file, tensor: name) }
            if name == "__metadata__" {
                metadata = try parseMetadata(value, file: file)
            } else {
                unsorted.append(try parseEntry(name: name, value: value, file: file))
            }
        }

        let tensors = unsorted.enumerated().sorted {
            ($0.element.dataOffsets.lowerBound, $0.element.dataOffsets.upperBound, $0.offset)
                < ($1.element.dataOffsets.lowerBound, $1.element.dataOffsets.upperBound, $1.offset)
        }.map(\.element)

        var expectedBegin: UInt64 = 0
        for entry in tensors {
            let name = entry.name
            let begin = entry.dataOffsets.lowerBound
            guard begin == expectedBegin else {
                throw SafeTensorsError.offsetsNotContiguous(file: file, tensor: name, begin: begin, expected: expectedBegin)
            }
            expectedBegin = entry.dataOffsets.upperBound
            let expected = try validatedByteCount(entry.info, file: file)
            let actual = entry.dataOffsets.upperBound - begin
            guard UInt64(expected) == actual else {
                throw SafeTensorsError.tensorSizeMismatch(file: file, tensor: name, expected: UInt64(expected), actual: actual)
            }
        }

        let header = SafeTensorsHeader(tensors: tensors, metadata: metadata, headerLength: headerLength)
        let (dataEnd, overflow) = header.dataStart.addingReportingOverflow(header.dataLength)
        if overflow || dataEnd > fileSize {
            throw SafeTensorsError.dataBeyondEndOfFile(file: file, dataEnd: overflow ? UInt64.max : dataEnd, fileSize: fileSize)
        }
        if dataEnd < fileSize {
            throw SafeTensorsError.trailingBytes(file: file, dataEnd: dataEnd, fileSize: fileSize)
        }
        return header
    }

    /// The shape's element count times the dtype's width, checked for
    /// overflow and for a whole number of bytes.
    static func validatedByteCount(_ info: TensorInfo, file: String) throws -> Int {
        var elements = 1
        for dimension in info.shape {
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw SafeTensorsError.shapeOverflow(file: file, tensor: info.name, shape: info.shapeDescription) }
            elements = product
        }
        let (bits, overflow) = elements.multipliedReportingOverflow(by: info.dtype.bitWidth)
        guard !overflow else { throw SafeTensorsError.byteCountOverflow(file: file, tensor: info.name, shape: info.shapeDescription) }
        guard bits % 8 == 0 else {
            throw SafeTensorsError.bitsNotByteAligned(file: file, tensor: info.name, dtype: info.dtype.rawValue, elements: elements)
        }
        return bits / 8
    }

    private static func parseMetadata(_ value: JSONValue, file: String) throws -> [(key: String, value: String)]? {
        if value == .null { return nil }
        guard let object = value.objectValue else {
            throw SafeTensorsError.metadataNotObject(file: file, found: value.kindDescription)
        }
        var seen = Set<String>()
        return try object.members.map { key, value in
            guard seen.insert(key).inserted else { throw SafeTensorsError.duplicateTensorName(file: file, tensor: "__metadata__.\(key)") }
            guard let string = value.stringValue else {
                throw SafeTensorsError.metadataValueNotString(file: file, key: key, found: value.kindDescription)
            }
            return (key, string)
        }
    }

    private static func parseEntry(name: String, value: JSONValue, file: String) throws -> Entry {
        guard let fields = value.objectValue else {
            throw SafeTensorsError.tensorEntryNotObject(file: file, tensor: name, found: value.kindDescription)
        }
        var seen = Set<String>()
        for key in fields.keys where !seen.insert(key).inserted {
            throw SafeTensorsError.invalidField(file: file, tensor: name, field: key, expected: "given once")
        }
        guard let dtypeValue = fields["dtype"] else { throw SafeTensorsError.missingField(file: file, tensor: name, field: "dtype") }
        guard let dtypeName = dtypeValue.stringValue else {
            throw SafeTensorsError.invalidField(file: file, tensor: name, field: "dtype", expected: "a string")
        }
        guard let dtype = DType(rawValue: dtypeName) else { throw SafeTensorsError.unknownDType(file: file, tensor: name, dtype: dtypeName) }

        guard let shapeValue = fields["shape"] else { throw SafeTensorsError.missingField(file: file, tensor: name, field: "shape") }
        guard let shapeItems = shapeValue.arrayValue else {
            throw SafeTensorsError.invalidField(file: file, tensor: name, field: "shape", expected: "an array of integers")
        }
        var shape: [Int] = []
        shape.reserveCapacity(shapeItems.count)
        for item in shapeItems {
            let dimension = try unsignedInteger(item, field: "shape", tensor: name, file: file)
            guard dimension <= UInt64(Int.max) else {
                throw SafeTensorsError.shapeOverflow(file: file, tensor: name, shape: "[" + shapeItems.map { $0.numberValue?.text ?? "?" }.joined(separator: ", ") + "]")
            }
            shape.append(Int(dimension))
        }

        guard let offsetsValue = fields["data_offsets"] else {
            throw SafeTensorsError.missingField(file: file, tensor: name, field: "data_offsets")
        }
        guard let offsetItems = offsetsValue.arrayValue, offsetItems.count == 2 else {
            throw SafeTensorsError.invalidField(file: file, tensor: name, field: "data_offsets", expected: "an array of two integers [BEGIN, END]")
        }
        let begin = try unsignedInteger(offsetItems[0], field: "data_offsets", tensor: name, file: file)
        let end = try unsignedInteger(offsetItems[1], field: "data_offsets", tensor: name, file: file)
        guard end >= begin else { throw SafeTensorsError.offsetsReversed(file: file, tensor: name, begin: begin, end: end) }
        return Entry(info: TensorInfo(name: name, dtype: dtype, shape: shape), dataOffsets: begin..<end)
    }

    private static func unsignedInteger(_ value: JSONValue, field: String, tensor: String, file: String) throws -> UInt64 {
        guard let number = value.numberValue else {
            throw SafeTensorsError.invalidField(file: file, tensor: tensor, field: field, expected: "an array of integers")
        }
        if number.isNegative { throw SafeTensorsError.negativeNumber(file: file, tensor: tensor, field: field, value: number.text) }
        guard let result = number.uint64Value else {
            throw SafeTensorsError.numberOutOfRange(file: file, tensor: tensor, field: field, value: number.text)
        }
        return result
    }
}
