# frozen_string_literal: true

# Names that only the Python workers run. The Rails app has these classes so it can enqueue
# them; the Ruby worker processes in the tests do not load this file.

PyOnlyJob = Struct.new(:key) do
  def perform
    raise "PyOnlyJob must run in Python"
  end
end

class PyNotifier
  def self.notify(key)
    raise "PyNotifier.notify must run in Python: #{key}"
  end
end

class Greeter
  attr_reader :key

  def initialize(key)
    @key = key
  end

  def greet
    raise "Greeter#greet must run in Python"
  end
end

class PyActiveJob < ActiveJob::Base
  queue_as :python

  def perform(key)
    raise "PyActiveJob must run in Python: #{key}"
  end
end
