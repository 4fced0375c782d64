// A container's JSON header alone (ContainerHeader.parse): every field rule.
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? ContainerHeader.parse(Array(UnsafeBufferPointer(start: data, count: size)), file: "fuzz.qc")
    return 0
}
