# The handler text Rails writes (`object.to_yaml`) for each payload on stdin, to compare with
# dj_consumer.ruby_yaml.dump_handler byte for byte (tests/interop/test_psych_bytes.py).
#   stdin: [{"name": "NewsletterJob", "shape": "object"|"struct", "payload": {...}}, ...]
#   stdout: a JSON array of the YAML texts
# Values are JSON, plus {"$dj": kind, "v": ...} for what JSON cannot say: bytes (base64), class,
# module, regexp [source, options], time (ISO 8601 with offset), date, set, range [b, e, excl],
# object / struct [name, {attributes}], rational [num, den].
require "json"
require "yaml"
require "set"
require "date"
require "time"
require "base64"

def constant(name)
  name.split("::").inject(Object) do |scope, part|
    scope.const_defined?(part, false) ? scope.const_get(part, false) : scope.const_set(part, Class.new)
  end
end

def struct_class(name, members)
  parts = name.split("::")
  scope = parts[0..-2].inject(Object) { |s, p| s.const_defined?(p, false) ? s.const_get(p, false) : s.const_set(p, Module.new) }
  return scope.const_get(parts.last, false) if scope.const_defined?(parts.last, false)
  scope.const_set(parts.last, Struct.new(*members.map(&:to_sym)))
end

def object(name, attributes, struct: false)
  if struct
    klass = struct_class(name, attributes.keys)
    return klass.new(*attributes.values.map { |v| value(v) })
  end
  o = constant(name).allocate
  attributes.each { |k, v| o.instance_variable_set("@#{k}", value(v)) }
  o
end

def value(v)
  case v
  when Array then v.map { |x| value(x) }
  when Hash
    kind = v["$dj"]
    return v.each_with_object({}) { |(k, x), h| h[k] = value(x) } if kind.nil?
    x = v["v"]
    case kind
    when "bytes" then Base64.strict_decode64(x).b
    when "class" then Object.const_get(x)
    when "module" then Object.const_get(x)
    when "regexp" then Regexp.new(x[0], (x[1].include?("i") ? Regexp::IGNORECASE : 0) | (x[1].include?("m") ? Regexp::MULTILINE : 0) | (x[1].include?("x") ? Regexp::EXTENDED : 0))
    when "time" then Time.iso8601(x)
    when "date" then Date.iso8601(x)
    when "set" then Set.new(x.map { |m| value(m) })
    when "range" then Range.new(value(x[0]), value(x[1]), x[2])
    when "object" then object(x[0], x[1])
    when "struct" then object(x[0], x[1], struct: true)
    when "rational" then Rational(x[0], x[1])
    else raise "unknown kind #{kind}"
    end
  else v
  end
end

cases = JSON.parse($stdin.read)
puts JSON.generate(cases.map { |c| object(c["name"], c["payload"], struct: c["shape"] == "struct").to_yaml })
