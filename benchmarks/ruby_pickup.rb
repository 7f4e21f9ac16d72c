# frozen_string_literal: true

# A real, idle Ruby delayed_job worker for the latency scenario (benchmarks/pickup.py):
# Delayed::Worker#start at Ruby's defaults (sleep_delay 5 s) until SIGTERM. Each StampJob
# appends "seq wall_time" to STAMPS when its perform starts; every 0.5 s a line
# "q statements cpu_seconds wall_time" counts the SQL statements sent so far.
#
#   ruby ruby_pickup.rb URL TABLE STAMPS

require "json"
require_relative "ruby_connect"

url, table, stamps = ARGV
abort("usage: ruby_pickup.rb URL TABLE STAMPS") unless url && table && stamps

OUT = File.open(stamps, "a")
OUT.sync = true
LOCK = Mutex.new

def stamp(line)
  LOCK.synchronize { OUT.puts(line) }
end

class StampJob
  attr_accessor :seq

  def perform
    stamp("#{seq} #{Time.now.to_f}")
  end
end

connect_delayed_job(url, table)
Delayed::Job.count

statements = 0
ActiveSupport::Notifications.subscribe("sql.active_record") do |*, payload|
  statements += 1 unless payload[:name] == "SCHEMA"
end
Thread.new do
  loop do
    stamp("q #{statements} #{Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)} #{Time.now.to_f}")
    sleep 0.5
  end
end
stamp("ready #{Time.now.to_f}")
Delayed::Worker.new(quiet: true).start
