# frozen_string_literal: true

# Rails' own ActiveJob enqueue through DelayedJobAdapter, to compare `dj-consumer enqueue --as
# active_job` with (tests/interop/test_enqueue_active_job.py).
#
#   ruby active_job_enqueue.rb enqueue --url URL --table TABLE   < [{"args": [...],
#        "kwargs": {...}, "queue": "q", "priority": 3}, ...]     → one row per spec, as JSON
#   ruby active_job_enqueue.rb perform --url URL --table TABLE --ids 1,2
#        → for each row: Delayed::Job#name, job_data as Ruby loads it (YAML.load_dj), and
#          what ReportJob#perform received
#
# URL is an ActiveRecord URL (mysql2://…, postgresql://…); times are UTC.

require "json"
require "logger"
require "optparse"
require "active_record"
require "active_job"
require "delayed_job"
require "delayed_job_active_record"
require "active_job/queue_adapters/delayed_job_adapter"

opts = { ids: [] }
command = ARGV.shift
OptionParser.new do |o|
  o.on("--url URL") { |v| opts[:url] = v }
  o.on("--table TABLE") { |v| opts[:table] = v }
  o.on("--ids A,B", Array) { |v| opts[:ids] = v.map(&:to_i) }
end.parse!(ARGV)

ActiveRecord::Base.default_timezone = :utc
Time.zone = "UTC" # what a Rails app has (config.time_zone defaults to "UTC")
ActiveRecord::Base.logger = nil
ActiveRecord::Base.establish_connection(opts.fetch(:url))
ActiveJob::Base.queue_adapter = :delayed_job
ActiveJob::Base.logger = Logger.new(nil)
Delayed::Job.table_name = opts.fetch(:table)
Delayed::Job.reset_column_information

PERFORMED = []

class ReportJob < ActiveJob::Base
  def perform(*args, **kwargs)
    PERFORMED << { "args" => args, "kwargs" => kwargs.transform_keys(&:to_s) }
  end
end

def row_json(row)
  { id: row.id, queue: row.queue, priority: row.priority, name: row.name, handler: row.handler,
    run_at_set: !row.run_at.nil? }
end

case command
when "enqueue"
  rows = JSON.parse($stdin.read).map do |spec|
    options = {}
    options[:queue] = spec["queue"] if spec["queue"]
    options[:priority] = spec["priority"] if spec["priority"]
    klass = options.empty? ? ReportJob : ReportJob.set(**options)
    args = spec.fetch("args", [])
    kwargs = (spec["kwargs"] || {}).transform_keys(&:to_sym)
    job = kwargs.empty? ? klass.perform_later(*args) : klass.perform_later(*args, **kwargs)
    row_json(Delayed::Job.find(job.provider_job_id))
  end
  puts JSON.generate(rows)
when "perform"
  out = opts[:ids].map do |id|
    row = Delayed::Job.find(id)
    PERFORMED.clear
    row.invoke_job
    row_json(row).merge(performed: PERFORMED.first, job_data: row.payload_object.job_data)
  end
  puts JSON.generate(out)
else
  abort("usage: active_job_enqueue.rb enqueue|perform --url URL --table TABLE")
end
