/// Constants of the qconv container layout (docs/FORMAT.md).
///
/// ```
/// [0, 8)    magic "QCONVFMT"
/// [8, 12)   u32 format version (1)
/// [12, 16)  u32 flags (0)
/// [16, 24)  u64 header length H
/// [24, 32)  u64 xxHash64 of the H header bytes
/// [32, 32+H) JSON header, padded with spaces so that 32+H is a multiple of 64
/// [32+H, end) data section: parts at 64-byte aligned offsets, zero padding between
/// ```
public enum ContainerFormat {
    public static let magic: [UInt8] = Array("QCONVFMT".utf8)
    public static let version: UInt32 = 1
    public static let prefixLength = 32
    /// Every part starts at a multiple of this, relative to the data section (which itself starts at one).
    public static let alignment = 64
    public static let maximumHeaderLength: UInt64 = 100_000_000
    /// The longest embedded file name (bytes of UTF-8), the usual file-system limit.
    public static let maximumFileNameLength = 255

    /// `value` rounded up to the next multiple of `alignment`.
    public static func aligned(_ value: UInt64) -> UInt64 {
        let a = UInt64(alignment)
        return (value + a - 1) / a * a
    }

    /// `value` as lower-case hex digits, two per byte (`xxh64` fields: 16, `offset_bits`: 8).
    public static func hexString<T: FixedWidthInteger & UnsignedInteger>(_ value: T) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: T.bitWidth / 4 - digits.count) + digits
    }

    /// Reads what `hexString` writes: exactly two lower-case hex digits per byte, nothing else.
    public static func parseHex<T: FixedWidthInteger & UnsignedInteger>(_ text: String, as type: T.Type = T.self) -> T? {
        guard text.utf8.count == T.bitWidth / 4,
              text.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) })
        else { return nil }
        return T(text, radix: 16)
    }

    /// The most folders an embedded file's path may name (`1_Pooling/config.json` names one).
    public static let maximumEmbeddedDepth = SideFileScan.maximumDepth

    /// Why `name` cannot be an embedded file's name, or nil when it can.
    ///
    /// `dequant` writes embedded files into its output folder under these
    /// names, beside the weights it writes, so a name must be a relative path
    /// of plain visible names (`config.json`, `1_Pooling/config.json`) that
    /// leaves no folder and cannot be one of those weight files.
    public static func embeddedFileNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "the name is empty" }
        if name.hasPrefix("/") { return "the name starts with '/'; it must be a relative path" }
        let components = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if components.count > maximumEmbeddedDepth + 1 { return "the name is nested deeper than \(maximumEmbeddedDepth) folders" }
        for component in components {
            if let problem = componentProblem(component) { return problem }
        }
        if isWeightFileName(components[0]) { return "the name is one of the weight files dequant writes" }
        return nil
    }

    /// Why one component of an embedded file's path is not a plain visible name.
    private static func componentProblem(_ component: String) -> String? {
        if component.isEmpty { return "the name has an empty component ('//' or a trailing '/')" }
        if component.utf8.count > maximumFileNameLength { return "the name is longer than \(maximumFileNameLength) bytes" }
        if let control = component.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return control.value == 0 ? "the name contains a NUL byte" : "the name contains the control character U+\(hexString(UInt16(control.value)).uppercased())"
        }
        if component == "." || component == ".." { return "'\(component)' is not a file name" }
        if component.hasPrefix(".") { return "the name starts with '.' (hidden files are not carried)" }
        return nil
    }

    /// The names of the weight files `dequant` writes.
    static func isWeightFileName(_ name: String) -> Bool {
        name == Checkpoint.singleFileName || name == Checkpoint.indexFileName || isShardFileName(name)
    }

    /// `model-*-of-*.safetensors`, the names `CheckpointWriter` gives shards.
    static func isShardFileName(_ name: String) -> Bool {
        guard name.hasPrefix("model-"), name.hasSuffix(".safetensors") else { return false }
        let middle = name.dropFirst("model-".count).dropLast(".safetensors".count)
        return middle.contains("-of-")
    }
}

/// Where a region of the data section is: a part of a tensor, or an embedded file.
public struct ContainerRegion: Equatable, Sendable {
    /// Relative to the start of the data section.
    public var offset: UInt64
    public var length: UInt64
    /// xxHash64 of the region's bytes.
    public var checksum: UInt64

    public init(offset: UInt64 = 0, length: UInt64 = 0, checksum: UInt64 = 0) {
        self.offset = offset
        self.length = length
        self.checksum = checksum
    }

    /// Where the region ends, relative to the start of the data section.
    public var end: UInt64 { offset + length }
}

/// One part of a tensor in a container: what it is, and where.
public struct ContainerPart: Equatable, Sendable {
    public var layout: PartLayout
    public var region: ContainerRegion

    public init(layout: PartLayout, region: ContainerRegion) {
        self.layout = layout
        self.region = region
    }

    public var name: PartName { layout.name }
    public var offset: UInt64 { region.offset }
    public var length: UInt64 { region.length }
    public var checksum: UInt64 { region.checksum }
}

/// A file of the source model folder carried along in a container (config.json, tokenizer files).
public struct EmbeddedFile: Equatable, Sendable {
    public var name: String
    public var region: ContainerRegion

    public init(name: String, region: ContainerRegion) {
        self.name = name
        self.region = region
    }

    public var offset: UInt64 { region.offset }
    public var length: UInt64 { region.length }
    public var checksum: UInt64 { region.checksum }
}
